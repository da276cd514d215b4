package core

import (
	"testing"

	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// Consolidation does not pack a VM where a return to its recent peak, or to the
// peak of a VM already there, would take the host past capacity, even though its
// forecast bound fits. Overload relief is not held to peaks.
func TestConsolidationLeavesRoomForRecentPeaks(t *testing.T) {
	p, _ := NewHeadroom("headroom", policy.DefaultHeadroom())
	s := snap(3, [3]float64{0, 2000, 870}, [3]float64{1, 100, 613})
	s.Time = 10000
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2000)...)
	f = fc(s, f, 1, 10, flat(6, 100)...)
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "underload" {
		t.Fatalf("moves %+v: without peaks, want host B emptied onto A", plan.Moves)
	}
	// vm1 ran at 4000 yesterday: 2000 + 100 + (4000 - 100) > 5320.
	f[1].Peak.CPU = 4000
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 0 {
		t.Errorf("moves %+v: vm1's peak does not fit beside vm0, want none", plan.Moves)
	}
	// vm0, already on A, ran at 5300: 2000 + 100 + (5300 - 2000) > 5320.
	f[1].Peak.CPU, f[0].Peak.CPU = 0, 5300
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 0 {
		t.Errorf("moves %+v: vm0's peak leaves no room for vm1, want none", plan.Moves)
	}
	// A peak that fits beside the other's need now does not stop it.
	f[0].Peak.CPU = 3000
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 1 {
		t.Errorf("moves %+v: 3000 + 100 fits, want B emptied", plan.Moves)
	}
	// room_for_peaks: false is the bound alone again.
	f[0].Peak.CPU = 5300
	off, _ := NewHeadroom("headroom", policy.DefaultHeadroom())
	off.Cfg.Underload.RoomForPeaks = false
	if plan := Decide(s, f, off, nil); len(plan.Moves) != 1 {
		t.Errorf("moves %+v: room_for_peaks off, want B emptied", plan.Moves)
	}
}

// Overload relief falls back to the forecast bound: when no host has room for a
// recent peak, a VM leaving a breach goes to a host with room for its bound.
func TestOverloadReliefIgnoresPeaks(t *testing.T) {
	p, _ := NewHeadroom("headroom", policy.DefaultHeadroom())
	s := snap(2, [3]float64{0, 2600, 870}, [3]float64{0, 2600, 870}, [3]float64{1, 1000, 613})
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2900)...)
	f = fc(s, f, 1, 10, flat(6, 2900)...)
	f = fc(s, f, 2, 10, flat(6, 1000)...)
	f[0].Peak.CPU, f[1].Peak.CPU = 5320, 5320
	plan := Decide(s, f, p, nil)
	if len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "overload" || plan.Moves[0].TargetHostID != "B" {
		t.Errorf("moves %+v: want one overload move to B", plan.Moves)
	}
}

// Overload relief prefers a target with room for a recent peak: host B has room
// for vm0's bound but not for its return to 5320, host C (empty) has room for
// both. With the preference off, packing takes the running host B.
func TestOverloadReliefPrefersRoomForPeaks(t *testing.T) {
	s := snap(3, [3]float64{0, 2900, 870}, [3]float64{0, 2900, 870}, [3]float64{1, 1000, 613})
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2900)...)
	f = fc(s, f, 1, 10, flat(6, 2900)...)
	f = fc(s, f, 2, 10, flat(6, 1000)...)
	f[0].Peak.CPU, f[1].Peak.CPU = 5320, 5320
	for _, c := range []struct {
		prefer bool
		want   string
	}{{true, "C"}, {false, "B"}} {
		cfg := policy.DefaultHeadroom()
		cfg.Underload.Enabled = false
		cfg.Placement.PreferRoomForPeaks = c.prefer
		p, err := NewHeadroom("headroom", cfg)
		if err != nil {
			t.Fatal(err)
		}
		plan := Decide(s, f, p, nil)
		if len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "overload" || plan.Moves[0].TargetHostID != c.want {
			t.Errorf("prefer_room_for_peaks %v: moves %+v, want one overload move to %s", c.prefer, plan.Moves, c.want)
		}
	}
}

// In memory, consolidation leaves room for all the target's VMs to return to
// their peaks at once: vm0 (need 1000 MB, peak 2500) and vm1 (500, peak 2000)
// fit side by side with room for either peak (1500 + 1500 <= 4096), not for
// both (1500 + 1500 + 1500 > 4096).
func TestConsolidationLeavesRoomForMemoryPeaksTogether(t *testing.T) {
	s := snap(3, [3]float64{0, 2000, 870}, [3]float64{1, 100, 613})
	s.Time = 10000
	s.VMs[0].Demand.Mem, s.VMs[1].Demand.Mem = 1000, 500
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2000)...)
	f = fc(s, f, 1, 10, flat(6, 100)...)
	f[0].Peak.Mem, f[1].Peak.Mem = 2500, 2000
	for _, c := range []struct {
		together bool
		moves    int
	}{{true, 0}, {false, 1}} {
		cfg := policy.DefaultHeadroom()
		cfg.Placement.MemoryPeaksTogether = c.together
		p, err := NewHeadroom("headroom", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if plan := Decide(s, f, p, nil); len(plan.Moves) != c.moves {
			t.Errorf("memory_peaks_together %v: moves %+v, want %d", c.together, plan.Moves, c.moves)
		}
	}
	// A peak that fits beside the other's is no obstacle.
	f[0].Peak.Mem = 1500
	p, _ := NewHeadroom("headroom", policy.DefaultHeadroom())
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "underload" {
		t.Errorf("moves %+v: 1500 + 500 + 1500 fits, want B emptied", plan.Moves)
	}
}

// Consolidation charges a move the energy measured for one, per MB of memory:
// the idle power saved over the horizon (93.7 W x 1800 s = 168,660 J) buys the
// move of a 300,000 MB VM (153,600 J), not of a 400,000 MB one (204,800 J).
// (Migration time is not charged: the default cost_watts is 0.)
func TestConsolidationChargesMigrationEnergyPerMB(t *testing.T) {
	p, _ := NewHeadroom("headroom", policy.DefaultHeadroom())
	for _, c := range []struct {
		mem   float64
		moves int
	}{{300000, 1}, {400000, 0}} {
		s := snap(3, [3]float64{0, 2000, c.mem}, [3]float64{1, 100, c.mem})
		s.Time = 10000
		var f []model.ResourceForecast
		f = fc(s, f, 0, 10, flat(6, 2000)...)
		f = fc(s, f, 1, 10, flat(6, 100)...)
		if plan := Decide(s, f, p, nil); len(plan.Moves) != c.moves {
			t.Errorf("%.0f MB: moves %+v, want %d", c.mem, plan.Moves, c.moves)
		}
	}
}

// Overload relief's preferred search counts memory peaks together too: B has room
// for vm1's bound and for either one memory peak beside vm2 (1500 + 1500 <=
// 4096), not for both (1500 + 1500 + 1500 > 4096), so vm1 goes to the empty C;
// with the rule off, packing takes the running B.
func TestOverloadReliefPrefersRoomForMemoryPeaksTogether(t *testing.T) {
	s := snap(3, [3]float64{0, 2900, 870}, [3]float64{0, 2900, 613}, [3]float64{1, 1000, 613})
	s.VMs[0].Demand.Mem, s.VMs[1].Demand.Mem, s.VMs[2].Demand.Mem = 1000, 1000, 500
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2900)...)
	f = fc(s, f, 1, 10, flat(6, 2900)...)
	f = fc(s, f, 2, 10, flat(6, 1000)...)
	f[0].Peak.Mem, f[1].Peak.Mem, f[2].Peak.Mem = 2500, 2500, 2000
	for _, c := range []struct {
		together bool
		want     string
	}{{true, "C"}, {false, "B"}} {
		cfg := policy.DefaultHeadroom()
		cfg.Underload.Enabled = false
		cfg.Placement.MemoryPeaksTogether = c.together
		p, err := NewHeadroom("headroom", cfg)
		if err != nil {
			t.Fatal(err)
		}
		plan := Decide(s, f, p, nil)
		if len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "overload" || plan.Moves[0].TargetHostID != c.want {
			t.Errorf("memory_peaks_together %v: moves %+v, want one overload move to %s", c.together, plan.Moves, c.want)
		}
	}
}
