package transfer

import (
	"math"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// exact is a model whose single stream never binds, so R is the link.
func exact() Model {
	m := DefaultModel()
	m.PerStreamMiBps = 1e6
	m.SetupSeconds = 2
	m.SwitchOverMs = 25
	m.MaxRounds = 100
	return m
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g", what, got, want)
	}
}

// TestPreCopyClosedForm checks the pass-by-pass model against the geometric
// series: data = M(1-q^(n+1))/(1-q) with q = D/R and n the first pass whose
// dirty set fits the downtime limit, time = data/R (+ setup and switch-over).
func TestPreCopyClosedForm(t *testing.T) {
	m := exact()
	for _, c := range []struct{ mem, dirty, rate, limitMs float64 }{
		{8192, 100, 1000, 300},
		{4096, 50, 112, 300},
		{16384, 500, 1100, 100},
		{1024, 10, 500, 50},
		{65536, 900, 1000, 300},
		{32768, 1, 10000, 300},
	} {
		q := c.dirty / c.rate
		limit := c.limitMs / 1000
		n := 0.0
		if c.mem/c.rate > limit {
			n = math.Ceil(math.Log(limit*c.rate/c.mem) / math.Log(q))
		}
		data := c.mem * (1 - math.Pow(q, n+1)) / (1 - q)
		p := m.Predict(Job{MemMiB: c.mem, DirtyMiBps: c.dirty, LinkMiBps: c.rate,
			Options: Options{Mode: model.PreCopy, MaxDowntimeMs: c.limitMs}})
		if !p.Converged || p.Rounds != int(n)+1 {
			t.Errorf("%+v: converged %v after %d rounds, want true after %v", c, p.Converged, p.Rounds, n+1)
		}
		near(t, "data", p.DataMiB, data)
		near(t, "wire", p.WireMiB, data)
		near(t, "seconds", p.Seconds, m.SetupSeconds+data/c.rate+m.SwitchOverMs/1000)
		near(t, "downtime", p.DowntimeMs, (c.mem*math.Pow(q, n)/c.rate)*1000+m.SwitchOverMs)
		if p.DowntimeMs > c.limitMs+m.SwitchOverMs {
			t.Errorf("%+v: downtime %v over the limit", c, p.DowntimeMs)
		}
	}
}

func TestPreCopyNoConvergenceWhenDirtyAtLeastRate(t *testing.T) {
	m := exact()
	m.MaxRounds = 20
	for _, dirty := range []float64{1000, 1500, 1e6} {
		p := m.Predict(Job{MemMiB: 4096, DirtyMiBps: dirty, LinkMiBps: 1000})
		if p.Converged || p.Why == "" {
			t.Fatalf("D=%v: converged=%v why=%q, want no convergence with a reason", dirty, p.Converged, p.Why)
		}
		// Every pass resends all RAM until the bound.
		near(t, "seconds", p.Seconds, m.SetupSeconds+20*4096/1000.0)
		near(t, "data", p.DataMiB, 20*4096)
		near(t, "forced downtime", p.DowntimeMs, 4096+m.SwitchOverMs)
		if p.Rounds != 20 {
			t.Errorf("rounds %d, want 20", p.Rounds)
		}
	}
}

func TestPreCopyZeroDirtyRate(t *testing.T) {
	m := exact()
	p := m.Predict(Job{MemMiB: 8192, DirtyMiBps: 0, LinkMiBps: 1000})
	if !p.Converged || p.Rounds != 1 {
		t.Fatalf("converged %v rounds %d, want one round", p.Converged, p.Rounds)
	}
	near(t, "seconds", p.Seconds, m.SetupSeconds+8.192+m.SwitchOverMs/1000)
	near(t, "downtime", p.DowntimeMs, m.SwitchOverMs)
	near(t, "data", p.DataMiB, 8192)
}

func TestPreCopyTinyVMIsOneStopAndCopy(t *testing.T) {
	m := exact()
	p := m.Predict(Job{MemMiB: 64, DirtyMiBps: 5000, LinkMiBps: 1000})
	if !p.Converged || p.Rounds != 1 {
		t.Fatalf("converged %v rounds %d, want one round", p.Converged, p.Rounds)
	}
	near(t, "downtime", p.DowntimeMs, 64+m.SwitchOverMs) // 64 MiB at 1000 MiB/s
	near(t, "data", p.DataMiB, 64)
}

func TestWorkingSetSaturatesDirtySet(t *testing.T) {
	m := exact()
	j := Job{MemMiB: 8192, DirtyMiBps: 2000, LinkMiBps: 1000}
	if m.Predict(j).Converged {
		t.Fatal("whole-RAM dirtying at twice the rate should not converge")
	}
	// A 200 MiB hot set at 1000 MiB/s is 0.2 s: one more pass, then the pause.
	j.WorkingSetMiB = 200
	p := m.Predict(j)
	if !p.Converged || p.Rounds != 2 {
		t.Fatalf("converged %v rounds %d, want 2", p.Converged, p.Rounds)
	}
	near(t, "data", p.DataMiB, 8392)
	near(t, "downtime", p.DowntimeMs, 200+m.SwitchOverMs)
	// W = M is the closed form.
	j = Job{MemMiB: 8192, DirtyMiBps: 300, LinkMiBps: 1000}
	a := m.Predict(j)
	j.WorkingSetMiB = 8192
	if b := m.Predict(j); a != b {
		t.Errorf("W = M gave %+v, W unset %+v", b, a)
	}
	// A working set larger than a pass's dirtying changes nothing; a smaller one
	// never sends more.
	j.WorkingSetMiB = 3000
	if c := m.Predict(j); c != a {
		t.Errorf("W above the dirty set changed the prediction: %+v vs %+v", c, a)
	}
	j.WorkingSetMiB = 500
	if c := m.Predict(j); c.DataMiB > a.DataMiB || c.Seconds > a.Seconds {
		t.Errorf("smaller W sent more: %+v vs %+v", c, a)
	}
}

func TestAutoConvergeConvergesWherePreCopyDoesNot(t *testing.T) {
	m := exact()
	m.MaxRounds = 30
	for _, dirty := range []float64{1000, 1500, 3000} {
		j := Job{MemMiB: 8192, DirtyMiBps: dirty, LinkMiBps: 1000, Options: Options{Mode: model.PreCopy}}
		if p := m.Predict(j); p.Converged {
			t.Fatalf("D=%v: plain pre-copy converged", dirty)
		}
		j.Mode = model.AutoConverge
		p := m.Predict(j)
		if !p.Converged {
			t.Fatalf("D=%v: auto-converge did not converge: %s", dirty, p.Why)
		}
		if p.FinalThrottle < m.ThrottleInitial || p.FinalThrottle > m.ThrottleMax || p.ThrottledSeconds <= 0 {
			t.Errorf("D=%v: throttle %v, throttled %v s", dirty, p.FinalThrottle, p.ThrottledSeconds)
		}
		// The throttle must at least bring the dirty rate under the rate.
		if dirty*(1-p.FinalThrottle) >= 1000 {
			t.Errorf("D=%v: converged with throttle %v leaving %v MiB/s", dirty, p.FinalThrottle, dirty*(1-p.FinalThrottle))
		}
	}
}

// TestAutoConvergePacing pins QEMU's pacing: the throttle starts after the
// second period that dirtied more than half of what was sent, and grows at every
// second such period after that.
func TestAutoConvergePacing(t *testing.T) {
	m := exact()
	want := map[int]float64{1: 0, 2: 0.2, 3: 0.2, 4: 0.3, 5: 0.3, 6: 0.4}
	for rounds, thr := range want {
		m.MaxRounds = rounds
		// 8 s passes: each is one sync period, and all stay high.
		p := m.Predict(Job{MemMiB: 8192, DirtyMiBps: 5000, LinkMiBps: 1024, Options: Options{Mode: model.AutoConverge}})
		if math.Abs(p.FinalThrottle-thr) > 1e-12 {
			t.Errorf("after %d passes throttle %v, want %v", rounds, p.FinalThrottle, thr)
		}
	}
	// Short passes share a period: 0.25 s each, so four make one.
	m.MaxRounds = 7
	p := m.Predict(Job{MemMiB: 256, DirtyMiBps: 5000, LinkMiBps: 1024, Options: Options{Mode: model.AutoConverge, MaxDowntimeMs: 100}})
	if p.FinalThrottle != 0 {
		t.Errorf("7 passes of 0.25 s throttled to %v; one full period cannot throttle", p.FinalThrottle)
	}
}

func TestPostCopyBoundedWhenDirtyExceedsRate(t *testing.T) {
	m := exact()
	for _, dirty := range []float64{100, 300, 1e5} {
		p := m.Predict(Job{MemMiB: 4096, DirtyMiBps: dirty, LinkMiBps: 100, Options: Options{Mode: model.PostCopy}})
		if !p.Converged || !p.PostCopy {
			t.Fatalf("D=%v: post-copy did not complete: %+v", dirty, p)
		}
		// One pre-copy pass, the pause, then the whole dirty set pulled.
		near(t, "seconds", p.Seconds, m.SetupSeconds+2*40.96+p.DowntimeMs/1000)
		near(t, "faulted", p.FaultedMiB, 4096)
		near(t, "data", p.DataMiB, 8192)
		if p.DowntimeMs > DefaultMaxDowntimeMs || p.DowntimeMs < m.SwitchOverMs {
			t.Errorf("D=%v: post-copy pause %v ms", dirty, p.DowntimeMs)
		}
	}
	// Nothing dirty: it completes in pre-copy and never switches.
	p := m.Predict(Job{MemMiB: 4096, LinkMiBps: 100, Options: Options{Mode: model.PostCopy}})
	if p.PostCopy || p.FaultedMiB != 0 || p.Rounds != 1 {
		t.Errorf("idle guest switched to post-copy: %+v", p)
	}
}

func TestStreamsRaiseRateUpToLink(t *testing.T) {
	m := DefaultModel() // 500 MiB/s a stream
	prev := 0.0
	for _, c := range []struct {
		streams int
		want    float64
	}{{1, 500}, {2, 1000}, {4, 1100}, {8, 1100}} {
		p := m.Predict(Job{MemMiB: 8192, DirtyMiBps: 50, LinkMiBps: 1100, Options: Options{Streams: c.streams}})
		near(t, "rate", p.RateMiBps, c.want)
		if p.Seconds > 0 && prev > 0 && p.Seconds > prev {
			t.Errorf("%d streams slower than fewer", c.streams)
		}
		prev = p.Seconds
	}
	// RDMA fills the link with one stream; the cap binds everything.
	near(t, "rdma", m.Predict(Job{MemMiB: 1, LinkMiBps: 1100, Options: Options{RDMA: true}}).RateMiBps, 1100)
	near(t, "capped", m.Predict(Job{MemMiB: 1, LinkMiBps: 1100, Options: Options{Streams: 8, CapMiBps: 300}}).RateMiBps, 300)
}

func TestCompressionRaisesRateNotWire(t *testing.T) {
	m := DefaultModel()
	base := Job{MemMiB: 8192, DirtyMiBps: 20, LinkMiBps: 112, Options: Options{Streams: 2}}
	plain := m.Predict(base)
	z := base
	z.Compression, z.Ratio = CompressZstd, 3
	pz := m.Predict(z)
	near(t, "zstd rate", pz.RateMiBps, 336)
	near(t, "zstd wire rate", pz.WireMiBps, 112)
	if pz.Seconds >= plain.Seconds || pz.WireMiB >= pz.DataMiB || pz.CPUSeconds <= 0 || plain.CPUSeconds != 0 {
		t.Errorf("zstd: %+v vs plain %+v", pz, plain)
	}
	// Ratio 1 buys nothing.
	z.Ratio = 1
	near(t, "incompressible", m.Predict(z).Seconds, plain.Seconds)
	// On a fast link the compressing threads bind: 2 x 400 MiB/s of RAM.
	z.Ratio, z.LinkMiBps = 3, 10000
	near(t, "cpu-bound", m.Predict(z).RateMiBps, 800)

	// XBZRLE leaves the first pass alone and shrinks the resent pages.
	x := Job{MemMiB: 8192, WorkingSetMiB: 32, DirtyMiBps: 100, LinkMiBps: 112,
		Options: Options{Compression: CompressXBZRLE, Ratio: 4}}
	px := m.Predict(x)
	x.Compression = CompressNone
	pn := m.Predict(x)
	near(t, "xbzrle first pass", px.RateMiBps, pn.RateMiBps)
	if px.WireMiB >= pn.WireMiB || px.DataMiB < 8192 {
		t.Errorf("xbzrle wire %v, plain %v", px.WireMiB, pn.WireMiB)
	}
}

func TestValidate(t *testing.T) {
	m := DefaultModel()
	bad := []Options{
		{Compression: CompressZstd, Streams: 1},
		{Compression: CompressXBZRLE, Streams: 4},
		{Mode: model.PostCopy, Compression: CompressXBZRLE},
		{Mode: model.PostCopy, Streams: 2},
		{RDMA: true, Streams: 2},
		{RDMA: true, Compression: CompressXBZRLE},
		{RDMA: true, Mode: model.PostCopy},
		{Mode: "teleport"},
		{Compression: "lz4"},
	}
	for _, o := range bad {
		if m.Validate(o) == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	good := []Options{{}, {Streams: 8, Compression: CompressZstd}, {Compression: CompressXBZRLE},
		{Mode: model.PostCopy}, {RDMA: true, Mode: model.AutoConverge}}
	for _, o := range good {
		if err := m.Validate(o); err != nil {
			t.Errorf("%+v refused: %v", o, err)
		}
	}
	m.PostcopyMultifd = true
	if err := m.Validate(Options{Mode: model.PostCopy, Streams: 4}); err != nil {
		t.Errorf("post-copy with multifd refused on a QEMU that allows it: %v", err)
	}
}

func TestPredictSeconds(t *testing.T) {
	l := Link{MiBps: 1100, SetupSeconds: 1}
	a := PredictSeconds(4096, 10, l)
	if b := PredictSeconds(8192, 10, l); b <= a {
		t.Errorf("more RAM not slower: %v vs %v", b, a)
	}
	if b := PredictSeconds(4096, 400, l); b <= a {
		t.Errorf("more dirtying not slower: %v vs %v", b, a)
	}
	// The link takes more than two streams: it uses 4.
	want := DefaultModel().Predict(Job{MemMiB: 4096, DirtyMiBps: 10, LinkMiBps: 1100, SetupSeconds: 1,
		Options: Options{Streams: 4}}).Seconds
	near(t, "PredictSeconds", a, want)
	// Past the rate it falls back to auto-converge and stays finite.
	if s := PredictSeconds(4096, 5000, l); math.IsInf(s, 0) || math.IsNaN(s) || s <= a {
		t.Errorf("D >> R: %v", s)
	}
}

func BenchmarkPredictSeconds(b *testing.B) {
	l := Link{MiBps: 1100}
	for i := range b.N {
		PredictSeconds(16384, float64(i%2000), l)
	}
}

// TestZeroPagesSkipTheFirstPass: zero pages cost a flag in the first pass; the
// later passes resend dirtied pages, which are not zero, as before.
func TestZeroPagesSkipTheFirstPass(t *testing.T) {
	m := exact()
	j := Job{MemMiB: 128, WorkingSetMiB: 32, DirtyMiBps: 5, LinkMiBps: 20, Options: Options{MaxDowntimeMs: 300}}
	full := m.Predict(j)
	j.ZeroMiB = 36
	p := m.Predict(j)
	// 92 MiB first pass (4.6 s), then 23 MiB (1.15 s), then 5.75 MiB: 287.5 ms
	// fits the limit.
	near(t, "data", p.DataMiB, 92+23+5.75)
	near(t, "seconds", p.Seconds, m.SetupSeconds+(92+23+5.75)/20+m.SwitchOverMs/1000)
	near(t, "downtime", p.DowntimeMs, 287.5+m.SwitchOverMs)
	if !p.Converged || p.Rounds != 3 || p.DataMiB >= full.DataMiB || p.Seconds >= full.Seconds {
		t.Errorf("with zero pages %+v, without %+v", p, full)
	}
	// All of RAM zero: nothing to send but the pause.
	j.ZeroMiB = 1e9
	p = m.Predict(j)
	near(t, "all zero", p.Seconds, m.SetupSeconds+m.SwitchOverMs/1000)
	if p.Rounds != 0 || !p.Converged {
		t.Errorf("all-zero guest: %+v", p)
	}
}

// TestStopAndCopyIgnoresTheCap: QEMU judges the remainder against the capped
// rate but lifts the cap for the pause.
func TestStopAndCopyIgnoresTheCap(t *testing.T) {
	m := exact()
	j := Job{MemMiB: 1024, DirtyMiBps: 5, LinkMiBps: 1000, Options: Options{CapMiBps: 20, MaxDowntimeMs: 300}}
	p := m.Predict(j)
	// Passes: 1024 MiB at 20, then 256, 64, 16, 4 MiB; 4/20 s = 200 ms fits.
	if !p.Converged || p.Rounds != 5 {
		t.Fatalf("%+v", p)
	}
	near(t, "downtime", p.DowntimeMs, 4.0/1000*1000+m.SwitchOverMs)
	near(t, "seconds", p.Seconds, m.SetupSeconds+(1024+256+64+16)/20.0+4.0/1000+m.SwitchOverMs/1000)
	// Without the cap the link decides both: 1.024 s, then 5.12 MiB.
	j.CapMiBps = 0
	q := m.Predict(j)
	if q.Rounds != 2 {
		t.Errorf("uncapped: %+v", q)
	}
	near(t, "uncapped downtime", q.DowntimeMs, 5.12+m.SwitchOverMs)
}

// TestAutoConvergePacedGuest: a guest that dirties at its own pace in a small
// share of its vCPU keeps that pace until the throttle leaves it less CPU than
// the dirtying needs, so auto-converge has to climb further and takes longer.
func TestAutoConvergePacedGuest(t *testing.T) {
	m := exact()
	j := Job{MemMiB: 128, ZeroMiB: 36, WorkingSetMiB: 32, DirtyMiBps: 30, LinkMiBps: 20,
		Options: Options{Mode: model.AutoConverge, MaxDowntimeMs: 300}}
	cpuBound := m.Predict(j)
	j.DirtyMaxMiBps = 300 // dirtying takes a tenth of the vCPU
	paced := m.Predict(j)
	if !cpuBound.Converged || !paced.Converged {
		t.Fatalf("cpu-bound %+v, paced %+v", cpuBound, paced)
	}
	// 30 MiB/s slows only past 90 %, and the step after 90 is the 99 % maximum.
	if paced.FinalThrottle != m.ThrottleMax || cpuBound.FinalThrottle >= 0.9 {
		t.Errorf("final throttle: paced %v, cpu-bound %v", paced.FinalThrottle, cpuBound.FinalThrottle)
	}
	if paced.Seconds <= cpuBound.Seconds || paced.Rounds <= cpuBound.Rounds {
		t.Errorf("paced %v s in %d passes, cpu-bound %v s in %d", paced.Seconds, paced.Rounds, cpuBound.Seconds, cpuBound.Rounds)
	}
	near(t, "throttled rate", throttled(30, 300, 0.95), 15)
	near(t, "unthrottled pace", throttled(30, 300, 0.5), 30)
	near(t, "cpu-bound", throttled(30, 30, 0.5), 15)
	// A maximum below the rate means nothing: the rate is what was measured.
	j.DirtyMaxMiBps = 10
	j2 := j
	j2.DirtyMaxMiBps = 0
	if a, b := m.Predict(j), m.Predict(j2); a != b {
		t.Errorf("DirtyMax below DirtyMiBps changed the prediction: %+v vs %+v", a, b)
	}
}
