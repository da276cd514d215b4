package libvirt

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/hypervisor"
)

// guest is a VM whose QEMU burns CPU at a set rate, read off the wall clock when
// the fake host is asked, as libvirtd reads it from the kernel.
type guest struct {
	mu    sync.Mutex
	at    time.Time     // when rate last changed
	cpu   time.Duration // CPU time used up to at
	rate  float64       // cores
	state int32
}

func newGuest(rate float64) *guest { return &guest{at: time.Now(), rate: rate, state: 1} }

func (g *guest) read() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cpu + time.Duration(g.rate*float64(time.Since(g.at)))
}

func (g *guest) set(rate float64, state int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.cpu += time.Duration(g.rate * float64(now.Sub(g.at)))
	g.at, g.rate, g.state = now, rate, state
}

func (g *guest) dom(name string, id int32) fakeDom {
	cpu := g.read()
	g.mu.Lock()
	defer g.mu.Unlock()
	return fakeDom{name: name, id: id, params: domStats(g.state, cpu, 1)}
}

func fakeDriver(t *testing.T, hosts map[string]*fakeHost, ids ...string) *Driver {
	t.Helper()
	var hcs []HostConfig
	for _, id := range ids {
		hcs = append(hcs, HostConfig{ID: id, URI: "qemu+tcp://" + id + "/system"})
	}
	d, err := New(Config{Hosts: hcs, Dial: fakeDial(hosts), MinRateInterval: 200 * time.Millisecond, ArrivalSettle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func statsOf(t *testing.T, d *Driver, host, vm string) *hypervisor.VMStats {
	t.Helper()
	st, err := d.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.VMs {
		if st.VMs[i].VM == vm && st.VMs[i].Host == host {
			return &st.VMs[i]
		}
	}
	return nil
}

// near: a rate worked out over an interval the driver could time to within 10 %.
func near(got, want float64) bool { return math.Abs(got-want) <= 0.15*want }

// TestStatsAfterAHeldUpCall: libvirtd reads a domain's counters, then holds the
// reply (a job in the way), and the next call comes at once. The rate must not put
// the CPU time of the wait over the short gap: every rate reported is the guest's.
func TestStatsAfterAHeldUpCall(t *testing.T) {
	g := newGuest(0.5)
	delay := 300 * time.Millisecond
	var mu sync.Mutex
	h := &fakeHost{cpus: 2, mhz: 2000, stats: func() ([]fakeDom, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		dl := delay
		delay = 0
		return []fakeDom{g.dom("v", 1)}, dl
	}}
	d := fakeDriver(t, map[string]*fakeHost{"a": h}, "a")
	var rated int
	for i, gap := range []time.Duration{0, 0, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond} {
		time.Sleep(gap)
		s := statsOf(t, d, "a", "v")
		if s == nil {
			t.Fatalf("call %d: no stats for v", i)
		}
		if s.Interval > 0 {
			rated++
			if !near(s.CPUUtil, 0.5) {
				t.Errorf("call %d: utilisation %.3f over %v, want 0.5", i, s.CPUUtil, s.Interval)
			}
		}
	}
	if rated == 0 {
		t.Error("no call reported a rate")
	}
	for _, f := range h.statsFlagsSeen() {
		if f&uint32(lv.ConnectGetAllDomainsStatsNowait) == 0 {
			t.Errorf("stats call flags %#x: want NOWAIT, so a domain's job cannot hold the call", f)
		}
	}
}

// TestStatsAfterAnIncomingMigration: the VM runs on a, then arrives on b. Its QEMU
// on b first shows paused while it receives the VM, burning CPU on that; once it
// runs, the first sample there has no rate, and the rates after it are the guest's.
// The source's old counters are never compared with the target's.
func TestStatsAfterAnIncomingMigration(t *testing.T) {
	src, dst := newGuest(0.3), newGuest(0.9) // dst: receiving the migration
	dst.state = 3
	var mu sync.Mutex
	phase := 0 // 0: on a; 1: a, and incoming on b; 2: on b
	script := func(host string) func() ([]fakeDom, time.Duration) {
		return func() ([]fakeDom, time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case host == "a" && phase < 2:
				return []fakeDom{src.dom("v", 7)}, 0
			case host == "b" && phase >= 1:
				return []fakeDom{dst.dom("v", 3)}, 0
			}
			return nil, 0
		}
	}
	hosts := map[string]*fakeHost{
		"a": {cpus: 2, mhz: 2000, stats: script("a")},
		"b": {cpus: 2, mhz: 2000, stats: script("b")},
	}
	d := fakeDriver(t, hosts, "a", "b")
	step := func(p int) {
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		phase = p
		mu.Unlock()
	}
	statsOf(t, d, "a", "v")
	step(1)
	if s := statsOf(t, d, "a", "v"); s == nil || s.Interval == 0 || !near(s.CPUUtil, 0.3) {
		t.Fatalf("on the source: %+v, want 0.3", s)
	}
	time.Sleep(300 * time.Millisecond)
	if s := statsOf(t, d, "b", "v"); s == nil || s.Interval != 0 {
		t.Errorf("paused on the target, receiving the VM: %+v, want no rate", s)
	}
	step(2)
	dst.set(0.3, 1) // the move completes: the guest runs on b
	time.Sleep(300 * time.Millisecond)
	first := statsOf(t, d, "b", "v")
	if first == nil || first.Interval != 0 {
		t.Errorf("first sample running on the target: %+v, want no rate (Interval 0)", first)
	}
	// Within ArrivalSettle (500 ms) of the arrival no sample is a base.
	for i := range 4 {
		time.Sleep(300 * time.Millisecond)
		s := statsOf(t, d, "b", "v")
		switch {
		case i < 2 && (s == nil || s.Interval != 0):
			t.Errorf("sample %d on the target, %d ms after it arrived: %+v, want no rate yet", i+2, 300*(i+1), s)
		case i >= 2 && (s == nil || s.Interval == 0 || !near(s.CPUUtil, 0.3)):
			t.Errorf("sample %d on the target: %+v, want the guest's 0.3", i+2, s)
		}
	}
}

// TestStatsCapsUtilisationAtTheVCPUs: QEMU's emulator and I/O threads take a
// 1-vCPU VM's CPU time past one core. The VM's utilisation stops at 1; the
// uncapped figure stays for the host's load.
func TestStatsCapsUtilisationAtTheVCPUs(t *testing.T) {
	g := newGuest(1.25)
	h := &fakeHost{cpus: 2, mhz: 2000, stats: func() ([]fakeDom, time.Duration) { return []fakeDom{g.dom("v", 1)}, 0 }}
	d := fakeDriver(t, map[string]*fakeHost{"a": h}, "a")
	statsOf(t, d, "a", "v")
	time.Sleep(300 * time.Millisecond)
	st, err := d.Stats(context.Background())
	if err != nil || len(st.VMs) != 1 || len(st.Hosts) != 1 {
		t.Fatalf("%+v %v", st, err)
	}
	s := st.VMs[0]
	if s.Interval == 0 || s.CPUUtil != 1 || !near(s.CPUCores, 1.25) {
		t.Errorf("VM: util %.3f, cores %.3f over %v; want util 1, cores 1.25", s.CPUUtil, s.CPUCores, s.Interval)
	}
	if u := st.Hosts[0].CPUUtil; !near(u, 1.25/2) {
		t.Errorf("host utilisation %.3f, want 1.25 cores of 2", u)
	}
}

// rec is a domain's stats record for the rates tests.
func rec(state int32, cpu time.Duration) counters {
	return parseRecord(domStats(state, cpu, 2))
}

// TestRatesRules walks the cases where a sample has no rate or measures from an
// earlier base, and which samples stay bases. Times are made up: no clock is read.
func TestRatesRules(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration, slack time.Duration, id int32, c counters) sample {
		return sample{t: t0.Add(d), slack: slack, id: id, c: c}
	}
	const ms = time.Millisecond
	older := at(-2*time.Second, ms, 5, rec(1, 9*time.Second))
	base := at(0, ms, 5, rec(1, 10*time.Second))
	slowBase := at(0, 500*ms, 5, rec(1, 10*time.Second))
	paused := at(0, ms, 5, rec(3, 10*time.Second))
	next := at(2*time.Second, ms, 5, rec(1, 11*time.Second))
	soon := at(500*ms, ms, 5, rec(1, 10*time.Second+250*ms))
	noCPU := at(2*time.Second, ms, 5, rec(3, 0))
	noCPU.c.hasCPU = false
	capped := at(time.Second, ms, 5, rec(1, 13*time.Second))
	restarted := at(2*time.Second, ms, 6, rec(1, 11*time.Second))
	reset := at(2*time.Second, ms, 5, rec(1, time.Second))
	pausedNow := at(2*time.Second, ms, 5, rec(3, 11*time.Second))
	pausedLater := at(2*time.Second, ms, 5, rec(3, 12*time.Second))
	slowNow := at(2*time.Second, 400*ms, 5, rec(1, 11*time.Second))
	arrivedNext := next
	arrivedNext.arrived = next.t
	landed := base
	landed.arrived = base.t
	settling := at(1500*ms, ms, 5, rec(1, 10*time.Second+750*ms))
	settling.arrived = base.t
	settledCur := at(3*time.Second, ms, 5, rec(1, 11*time.Second+500*ms))
	settledCur.arrived = base.t
	for _, tc := range []struct {
		name     string
		bases    []sample
		cur      sample
		interval time.Duration
		util     float64
		after    []sample
	}{
		{"first", nil, base, 0, 0, []sample{base}},
		{"normal", []sample{base}, next, 2 * time.Second, 0.25, []sample{base, next}},
		{"two bases kept", []sample{older, base}, next, 2 * time.Second, 0.25, []sample{base, next}},
		{"capped at the vCPUs", []sample{base}, capped, time.Second, 1, []sample{base, capped}},
		{"new process: domain ID", []sample{base}, restarted, 0, 0, []sample{restarted}},
		{"new process: CPU time back", []sample{base}, reset, 0, 0, []sample{reset}},
		{"runs now, paused before (incoming)", []sample{older, paused}, next, 0, 0, []sample{arrivedNext}},
		{"within the settle after arriving", []sample{landed}, settling, 0, 0, []sample{landed, settling}},
		{"after the settle: from a settled base", []sample{landed, settling}, settledCur, 1500 * ms, 0.25, []sample{settling, settledCur}},
		{"paused now, ran before", []sample{base}, pausedNow, 2 * time.Second, 0.25, []sample{base, pausedNow}},
		{"paused now and before (receiving)", []sample{paused}, pausedLater, 0, 0, []sample{paused, pausedLater}},
		{"too soon, one base", []sample{base}, soon, 0, 0, []sample{base}},
		{"too soon: from the older base", []sample{older, base}, soon, 2500 * ms, 0.25, []sample{older, base}},
		{"slow call now", []sample{base}, slowNow, 0, 0, []sample{base, slowNow}},
		{"slow base: from the older one", []sample{older, slowBase}, next, 4 * time.Second, 0.25, []sample{slowBase, next}},
		{"no cpu.time: no CPU rate, not a restart", []sample{base}, noCPU, 2 * time.Second, 0, []sample{base, noCPU}},
	} {
		s, after := rates("v", "h", tc.cur, tc.bases, time.Second, time.Second)
		if s.Interval != tc.interval || math.Abs(s.CPUUtil-tc.util) > 1e-9 || !slices.Equal(after, tc.after) {
			t.Errorf("%s: interval %v util %v, bases %v; want %v, %v, %v", tc.name, s.Interval, s.CPUUtil, times(after), tc.interval, tc.util, times(tc.after))
		}
	}
}

// times are the samples' times, for messages.
func times(ss []sample) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.t.Format("05.000"))
	}
	return out
}
