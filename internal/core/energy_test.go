package core

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// underload.scorers gives consolidation its own ranking. Host A (two VMs at 300)
// is emptied. Under placement's scorers, vm0 goes to B (the fuller host), and then
// migration-cost sends vm1 to C, since a copy is already coming in to B. With
// consolidation ranked by packing alone, both go to B, and C, which received
// nothing, is emptied onto B as well.
func TestConsolidationScorersRankItsTargets(t *testing.T) {
	s := snap(3, [3]float64{0, 300, 100}, [3]float64{0, 300, 100}, [3]float64{1, 3000, 100}, [3]float64{2, 1500, 100})
	s.Time = 10000
	var f []model.ResourceForecast
	for v, x := range []float64{300, 300, 3000, 1500} {
		f = fc(s, f, v, 10, flat(6, x)...)
	}
	targets := func(p *Headroom) map[string]string {
		out := map[string]string{}
		for _, m := range Decide(s, f, p, nil).Moves {
			if m.Reason.Rule != "underload" {
				t.Errorf("move %+v: want only consolidation", m)
			}
			out[m.VMInstanceID] = m.TargetHostID
		}
		return out
	}
	def, err := NewHeadroom("headroom", policy.DefaultHeadroom())
	if err != nil {
		t.Fatal(err)
	}
	if got := targets(def); got["vm0"] != "B" || got["vm1"] != "C" || len(got) != 2 {
		t.Errorf("placement's scorers: moves %v, want vm0 to B and vm1 to C", got)
	}
	cfg := policy.DefaultHeadroom()
	cfg.Underload.Scorers = []policy.WeightedStep{{Name: "packing", Weight: 1}, {Name: "affinity", Weight: 1}}
	fit, err := NewHeadroom("headroom", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := targets(fit); got["vm0"] != "B" || got["vm1"] != "B" || got["vm3"] != "B" || len(got) != 3 {
		t.Errorf("consolidation by packing: moves %v, want vm0, vm1 and vm3 to B", got)
	}
	// An unknown scorer in underload.scorers is an error that names the key.
	cfg.Underload.Scorers = []policy.WeightedStep{{Name: "nope", Weight: 1}}
	if _, err := NewHeadroom("headroom", cfg); err == nil || !strings.Contains(err.Error(), "underload.scorers") {
		t.Errorf("unknown consolidation scorer: error %v, want one naming underload.scorers", err)
	}
}
