package backtest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/trace"
)

func refOf(t *testing.T, refs []Reference, name string) Reference {
	t.Helper()
	for _, r := range refs {
		if r.Name == name && r.Resource == "cpu" {
			return r
		}
	}
	t.Fatalf("no %s in %v", name, refs)
	return Reference{}
}

// The look-ahead window must skip the targets: with one origin whose six
// targets are 1 and everything else 0, a window that saw them would not be 0.
func TestLookaheadSkipsTargets(t *testing.T) {
	x := make([]float32, 12+6)
	for i := 12; i < len(x); i++ {
		x[i] = 1
	}
	w := &trace.Workload{Name: "one", Step: 300, VMs: []trace.Series{{ID: "vm", CPU: x}}}
	refs, err := RunReferences(w, Options{Horizon: 6})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range References {
		r := refOf(t, refs, name)
		if r.N != 6 || r.MAE != 1 || r.Ratio != 1 {
			t.Errorf("%s: %+v, want n 6, MAE 1, ratio 1", name, r)
		}
	}
}

// A level that steps up mid-trace: looking past the step must beat every
// trailing window, and the hindsight choice includes mean12, so it cannot
// lose to it.
func TestReferencesOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var vms []trace.Series
	for v := range 20 {
		x := make([]float32, 288)
		for i := range x {
			lvl := 0.2
			if i >= 100+v {
				lvl = 0.7
			}
			x[i] = float32(lvl + 0.05*rng.NormFloat64())
		}
		vms = append(vms, trace.Series{ID: string(rune('a' + v)), CPU: x})
	}
	w := &trace.Workload{Name: "step", Step: 300, VMs: vms}
	refs, err := RunReferences(w, Options{Horizon: 6})
	if err != nil {
		t.Fatal(err)
	}
	la, lb, hb := refOf(t, refs, "lookahead-median48"), refOf(t, refs, "lookahead-best"), refOf(t, refs, "hindsight-trailing-best")
	if !(lb.MAE <= la.MAE && lb.MAE < hb.MAE && hb.Ratio <= 1) || math.IsNaN(la.MAE) {
		t.Errorf("want lookahead-best <= lookahead-median48, < hindsight-trailing-best, which <= mean12: %+v %+v %+v", lb, la, hb)
	}
	if _, err := RunReferences(w, Options{Horizon: 0}); err == nil {
		t.Error("horizon 0 accepted")
	}
}
