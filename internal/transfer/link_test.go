package transfer

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// simulate measures a migration on a link of trueMiBps by running the model
// there with the options chosen.
func simulate(m Model, in Input, o model.StateTransferOptions, trueMiBps float64) Measured {
	opts := Options{Mode: o.Mode, Streams: o.ParallelStreams, Compression: o.Compression,
		CapMiBps: o.BandwidthMiBps, MaxDowntimeMs: o.MaxDowntimeMs}
	p := m.Predict(Job{MemMiB: in.MemMiB, DirtyMiBps: in.DirtyMiBps, LinkMiBps: trueMiBps, Options: opts})
	return Measured{Seconds: p.Seconds, SetupSeconds: m.SetupSeconds, DataMiB: p.WireMiB,
		DowntimeMs: p.DowntimeMs, Completed: true}
}

func TestLearnSlowerThanPredictedLowersEstimate(t *testing.T) {
	m := DefaultModel()
	est := NewEstimates(LinkConfig{PriorSetupSeconds: m.SetupSeconds})
	pair := Pair{"h1", "h2"}
	c := NewChooser(m)
	in := Input{MemMiB: 8192, DirtyMiBps: 50}
	const truth = 400.0 // the prior says 1100
	var firstErr, lastErr float64
	prevErr := math.Inf(1)
	for i := range 5 {
		in.Link = est.Link(pair)
		o, _ := c.Choose(in)
		meas := simulate(m, in, o, truth)
		if meas.Seconds <= o.PredictedSeconds {
			t.Fatalf("round %d: measured %v s not slower than predicted %v s", i, meas.Seconds, o.PredictedSeconds)
		}
		err := math.Abs(o.PredictedSeconds - meas.Seconds)
		if i == 0 {
			firstErr = err
		}
		if err >= prevErr {
			t.Errorf("round %d: error %v s, was %v s", i, err, prevErr)
		}
		prevErr = err
		lastErr = err
		before := est.Link(pair).MiBps
		rec, ok := est.Learn(pair, o, meas)
		after := est.Link(pair).MiBps
		if !ok || rec.Censored || rec.LinkBefore != before || rec.LinkAfter != after {
			t.Fatalf("round %d: record %+v ok=%v", i, rec, ok)
		}
		// Down, but never past what was measured, and by a bounded step.
		if !(after < before) || after < rec.RateMiBps {
			t.Errorf("round %d: estimate %v -> %v, measured rate %v", i, before, after, rec.RateMiBps)
		}
		if before-after > 0.5*(before-rec.RateMiBps)+1e-9 {
			t.Errorf("round %d: step %v more than half the gap %v", i, before-after, before-rec.RateMiBps)
		}
	}
	if !(lastErr < 0.6*firstErr) {
		t.Errorf("prediction error %v s after learning, %v s before", lastErr, firstErr)
	}
	s := est.Errors(pair)
	if s.N != 5 || s.SecondsBias >= 0 || s.SecondsMAPE <= 0 || s.DataMAPE < 0 {
		t.Errorf("summary %+v: want 5 optimistic predictions", s)
	}
	if l := est.Link(pair); l.Samples != 5 {
		t.Errorf("samples %d", l.Samples)
	}
}

func TestLearnFasterThanPredictedRaisesEstimate(t *testing.T) {
	est := NewEstimates(LinkConfig{PriorMiBps: 500})
	p := Pair{"a", "b"}
	o := model.StateTransferOptions{Mode: model.PreCopy, ParallelStreams: 4, PredictedSeconds: 20}
	est.Learn(p, o, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 9000, Completed: true}) // 900 MiB/s
	if l := est.Link(p).MiBps; !(l > 500 && l < 900) {
		t.Errorf("estimate %v after a 900 MiB/s migration from a 500 prior", l)
	}
}

func TestLearnCappedRateOnlyRaises(t *testing.T) {
	est := NewEstimates(LinkConfig{PriorMiBps: 1100})
	p := Pair{"a", "b"}
	// libvirt held it to 300 MiB/s: that says nothing against 1100.
	capped := model.StateTransferOptions{ParallelStreams: 4, BandwidthMiBps: 300}
	rec, ok := est.Learn(p, capped, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 2950, Completed: true})
	if !ok || !rec.Censored || est.Link(p).MiBps != 1100 {
		t.Errorf("capped: %+v, estimate %v", rec, est.Link(p).MiBps)
	}
	// One TCP stream at its ceiling: same.
	one := model.StateTransferOptions{ParallelStreams: 1}
	if rec, _ = est.Learn(p, one, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 4900}); !rec.Censored || est.Link(p).MiBps != 1100 {
		t.Errorf("one stream: %+v, estimate %v", rec, est.Link(p).MiBps)
	}
	// Compression may be CPU-bound at any rate.
	z := model.StateTransferOptions{ParallelStreams: 4, Compression: CompressZstd}
	if rec, _ = est.Learn(p, z, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 1000}); !rec.Censored || est.Link(p).MiBps != 1100 {
		t.Errorf("zstd: %+v, estimate %v", rec, est.Link(p).MiBps)
	}
	// But a slow rate well under the cap is the link's.
	if rec, _ = est.Learn(p, capped, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 1000}); rec.Censored || est.Link(p).MiBps >= 1100 {
		t.Errorf("under the cap: %+v, estimate %v", rec, est.Link(p).MiBps)
	}
	// RDMA has no stream ceiling.
	est2 := NewEstimates(LinkConfig{PriorMiBps: 1100})
	r := model.StateTransferOptions{ParallelStreams: 1, MigrateURI: "rdma://10.9.0.2"}
	if rec, _ = est2.Learn(p, r, Measured{Seconds: 11, SetupSeconds: 1, DataMiB: 4900}); rec.Censored || est2.Link(p).MiBps >= 1100 {
		t.Errorf("rdma: %+v, estimate %v", rec, est2.Link(p).MiBps)
	}
}

func TestLearnBoundsOneOutlier(t *testing.T) {
	est := NewEstimates(LinkConfig{PriorMiBps: 1000, MaxStep: 4})
	p := Pair{"a", "b"}
	o := model.StateTransferOptions{ParallelStreams: 8}
	est.Learn(p, o, Measured{Seconds: 1001, SetupSeconds: 1, DataMiB: 1000}) // 1 MiB/s
	// The sample counts as 250 MiB/s at most, with weight 1/3 (prior worth 2).
	if l := est.Link(p).MiBps; math.Abs(l-750) > 1e-9 {
		t.Errorf("estimate %v after an outlier, want 750", l)
	}
	if _, ok := est.Learn(p, o, Measured{Seconds: 10}); ok {
		t.Error("learned from a migration that moved nothing")
	}
}

func TestLearnHistoryIsBounded(t *testing.T) {
	est := NewEstimates(LinkConfig{History: 5})
	p := Pair{"a", "b"}
	for i := range 12 {
		est.Learn(p, model.StateTransferOptions{ParallelStreams: 8},
			Measured{Seconds: float64(10 + i), SetupSeconds: 1, DataMiB: 5000, Completed: true})
	}
	recs := est.Records(p)
	if len(recs) != 5 {
		t.Fatalf("%d records", len(recs))
	}
	for i, r := range recs {
		if r.MeasSeconds != float64(17+i) {
			t.Errorf("record %d is from the migration of %v s, want %d", i, r.MeasSeconds, 17+i)
		}
	}
	if got := est.Pairs(); len(got) != 1 || got[0] != p {
		t.Errorf("pairs %v", got)
	}
	if est.Records(Pair{"x", "y"}) != nil || est.Link(Pair{"x", "y"}).MiBps != DefaultLinkMiBps {
		t.Error("an unseen pair is not the prior")
	}
}

func TestLearnConcurrent(t *testing.T) {
	est := NewEstimates(LinkConfig{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			p := Pair{"a", string(rune('b' + g%2))}
			for range 100 {
				est.Learn(p, model.StateTransferOptions{ParallelStreams: 8}, Measured{Seconds: 10, SetupSeconds: 1, DataMiB: 4500})
				est.Link(p)
				est.Errors(p)
			}
		})
	}
	wg.Wait()
	if n := est.Link(Pair{"a", "b"}).Samples + est.Link(Pair{"a", "c"}).Samples; n != 400 {
		t.Errorf("%d samples, want 400", n)
	}
}

func TestMeasuredFrom(t *testing.T) {
	r := hypervisor.Result{Wall: 20 * time.Second}
	r.Phase = hypervisor.PhaseCompleted
	r.Elapsed = 19 * time.Second
	r.Setup = 500 * time.Millisecond
	r.DataProcessed = 10 << 30
	r.Downtime = 120 * time.Millisecond
	r.MemBps = 600 << 20
	m := MeasuredFrom(r)
	want := Measured{Seconds: 20, SetupSeconds: 1.5, DataMiB: 10240, DowntimeMs: 120, MiBps: 600, Completed: true}
	if m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	if got := m.RateMiBps(); math.Abs(got-10240/18.5) > 1e-9 {
		t.Errorf("rate %v", got)
	}
	// Without times, the hypervisor's rate.
	if got := (Measured{MiBps: 600}).RateMiBps(); got != 600 {
		t.Errorf("fallback rate %v", got)
	}
}
