package placement

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// peakFixture: hosts of 4000 CPU; every VM asks 1000 now and is forecast flat,
// so by its bound z fits anywhere. peaks are the VMs' largest CPU in the last day.
func peakFixture(peaks [3]float64) *cluster.State {
	s := fixture()
	fc := make([]model.ResourceForecast, 3)
	for v := range fc {
		f := model.ResourceForecast{VMInstanceID: s.VMs[v].ID, Step: 300, Confidence: 0.9, Peak: model.Resources{CPU: peaks[v]}}
		for range 3 {
			f.PredictedCPU = append(f.PredictedCPU, 1000)
			f.Upper = append(f.Upper, model.Resources{CPU: 1000})
		}
		fc[v] = f
	}
	return cluster.New(s, fc)
}

// With Peaks, a host is refused when one VM returning to its recent peak would
// take it past capacity, whether that VM is the one placed (z) or one already
// there (x); without Peaks (overload relief) the forecast bound alone decides.
func TestPeaksRefuseAHostWithoutRoomForARecentPeak(t *testing.T) {
	// z reached 3500 yesterday: 1000 (x) + 3500 > 4000.
	st := peakFixture([3]float64{1000, 1000, 3500})
	c := NewContext(st, 1.2816, 1.0)
	c.explain = true
	if why := (capacityFilter{}).Reject(c, 2, 0); why != "" {
		t.Fatalf("bound alone: %q, want a pass", why)
	}
	c.Peaks = true
	if why := (capacityFilter{}).Reject(c, 2, 0); !strings.Contains(why, "recent peak") || c.rejectedOn != model.CPU {
		t.Errorf("z's own peak: %q, want a rejection on its recent peak (cpu)", why)
	}
	// x, already on A, reached 3500: the same host is refused for a quiet z.
	st = peakFixture([3]float64{3500, 1000, 1000})
	c = NewContext(st, 1.2816, 1.0)
	c.Peaks = true
	if why := (capacityFilter{}).Reject(c, 2, 0); why == "" {
		t.Error("x's peak: want a rejection")
	}
	// Peaks that fit together with the others' need now pass: 1000 + 1000 + 1900 <= 4000.
	st = peakFixture([3]float64{2900, 1000, 2900})
	c = NewContext(st, 1.2816, 1.0)
	c.Peaks = true
	if why := (capacityFilter{}).Reject(c, 2, 0); why != "" {
		t.Errorf("peaks that fit: %q, want a pass", why)
	}
}
