package metrics

import (
	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/model"
)

// Online forecast scoring: each cycle's one-step-ahead forecast of every VM is kept
// and, at the next cycle, compared with the demand that came. A pair counts once the
// VM has 12 earlier actuals, so the forecaster and the mean-of-last-12 baseline are
// scored on the same pairs.

const baselineLen = 12

// Quality is one resource's score over the rolling window.
type Quality struct {
	Resource string `json:"resource"`
	N        int    `json:"n"`
	// Coverage is the share of pairs whose actual was at or under the upper bound.
	Coverage    float64 `json:"coverage"`
	MAE         float64 `json:"mae"`
	BaselineMAE float64 `json:"baseline_mae"`
}

type cycleScore struct {
	n, covered        [4]int
	absErr, baseError [4]float64
}

type vmTrack struct {
	pred, upper model.Resources
	has         bool
	actuals     [][4]float64 // newest last, at most baselineLen
}

type quality struct {
	window int
	ring   []cycleScore
	vms    map[string]*vmTrack
}

func newQuality(window int) *quality {
	return &quality{window: window, vms: map[string]*vmTrack{}}
}

func (q *quality) observe(cy controller.Cycle) {
	snap := cy.Snapshot
	var sc cycleScore
	seen := map[string]bool{}
	for i, v := range snap.VMs {
		seen[v.ID] = true
		t := q.vms[v.ID]
		if t == nil {
			t = &vmTrack{}
			q.vms[v.ID] = t
		}
		var act [4]float64
		for _, r := range model.AllResources {
			act[r] = v.Demand.Get(r)
		}
		if t.has && len(t.actuals) == baselineLen {
			for _, r := range model.AllResources {
				var mean float64
				for _, a := range t.actuals {
					mean += a[r]
				}
				mean /= baselineLen
				sc.n[r]++
				sc.absErr[r] += abs(act[r] - t.pred.Get(r))
				sc.baseError[r] += abs(act[r] - mean)
				// A hair of slack: a flat series forecast exactly is covered.
				if act[r] <= t.upper.Get(r)+1e-9*max(1, abs(act[r])) {
					sc.covered[r]++
				}
			}
		}
		t.actuals = append(t.actuals, act)
		if len(t.actuals) > baselineLen {
			t.actuals = t.actuals[1:]
		}
		t.has = false
		if i < len(cy.Forecasts) && cy.Forecasts[i].Horizon() > 0 && len(cy.Forecasts[i].Upper) > 0 {
			t.pred, t.upper, t.has = cy.Forecasts[i].Point(0), cy.Forecasts[i].Upper[0], true
		}
	}
	for id := range q.vms {
		if !seen[id] {
			delete(q.vms, id)
		}
	}
	q.ring = append(q.ring, sc)
	if len(q.ring) > q.window {
		q.ring = q.ring[1:]
	}
}

func (q *quality) summary(r model.Resource) Quality {
	out := Quality{Resource: r.String()}
	var covered int
	var e, b float64
	for _, sc := range q.ring {
		out.N += sc.n[r]
		covered += sc.covered[r]
		e += sc.absErr[r]
		b += sc.baseError[r]
	}
	if out.N > 0 {
		out.Coverage = float64(covered) / float64(out.N)
		out.MAE = e / float64(out.N)
		out.BaselineMAE = b / float64(out.N)
	}
	return out
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
