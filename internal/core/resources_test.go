package core

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// memClimb: host A's two VMs idle on CPU while vm0's memory climbs past 90 % of A's
// 4096 MB within three steps; B and C are empty enough to take it.
func memClimb() (*model.Snapshot, []model.ResourceForecast) {
	s := snap(3, [3]float64{0, 50, 3000}, [3]float64{0, 50, 600}, [3]float64{1, 500, 870})
	s.VMs[0].Demand.Mem, s.VMs[1].Demand.Mem, s.VMs[2].Demand.Mem = 2400, 500, 600
	f := fc(s, nil, 0, 10, 50, 50, 50)
	f = fc(s, f, 1, 10, 50, 50, 50)
	f = fc(s, f, 2, 10, 500, 500, 500)
	// vm0's memory: 3300, 3400, 3400 MB (host past 90 % from step 1) with a 100 MB spread to the 90 % bound.
	f[0].PredictedMemory = []float64{3300, 3400, 3400}
	f[1].PredictedMemory = []float64{500, 500, 500}
	f[2].PredictedMemory = []float64{600, 600, 600}
	for i := range 3 {
		for v := range f {
			f[v].Upper[i].Mem = f[v].PredictedMemory[i] + 100
		}
	}
	return s, f
}

func TestMemoryBreachPredictedWithCPUIdleMoves(t *testing.T) {
	s, f := memClimb()
	p := headroomPolicy(t, nil)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	if len(ex.Moves) == 0 {
		t.Fatalf("no move for a memory breach predicted with the CPU at 2 %%; risks %+v", ex.Risks)
	}
	m := ex.Moves[0]
	if m.Reason.Rule != "overload" || !strings.Contains(m.Reason.Detail, "memory") || m.Target == 0 {
		t.Errorf("move %+v: want an overload move off A that names memory", m)
	}
	if len(ex.Risks) == 0 || ex.Risks[0].Host != "A" || ex.Risks[0].Resource != "mem" || !strings.Contains(ex.Risks[0].Why, "memory") {
		t.Errorf("risks %+v: want host A at risk on mem, named in the explanation", ex.Risks)
	}
	// The CPU-only policy does not see it.
	cpu := headroomPolicy(t, func(c *policy.HeadroomConfig) { c.Resources = []string{"cpu"} })
	if plan := Decide(s, f, cpu, nil); len(plan.Moves) != 0 {
		t.Errorf("resources [cpu] moved %+v on a memory forecast", plan.Moves)
	}
}

func TestMemoryTriggerIsEarlierThanCPUs(t *testing.T) {
	// Memory at 92 % of capacity for sure: past memory's 90 % threshold but under
	// CPU's 100 %. With memory's trigger the default, it acts; given CPU's, it waits.
	s, f := memClimb()
	for i := range 3 {
		f[0].PredictedMemory[i], f[0].Upper[i].Mem = 0.92*4096-500, 0.92*4096-500
		f[1].Upper[i].Mem, f[2].Upper[i].Mem = 500, 600
	}
	if plan := Decide(s, f, headroomPolicy(t, nil), nil); len(plan.Moves) == 0 {
		t.Error("memory at 92 % did not act under the default memory trigger")
	}
	same := headroomPolicy(t, func(c *policy.HeadroomConfig) { c.OverloadByResource = nil })
	if plan := Decide(s, f, same, nil); len(plan.Moves) != 0 {
		t.Errorf("memory at 92 %% acted under CPU's trigger: %+v", plan.Moves)
	}
}

func TestExplainNamesTheBindingResourceOfRejectedCandidates(t *testing.T) {
	s, f := memClimb()
	// vm1 moved a minute ago, so vm0 leaves. B cannot take its memory bound from
	// step 1 (3400 + 600 > 0.9 x 4096); the empty C can.
	s.Time, s.VMs[1].LastMigration = 10000, 9940
	s.VMs[2].Demand.Mem = 600
	p := headroomPolicy(t, nil)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	if len(ex.Moves) != 1 || ex.Moves[0].TargetHostID != "C" {
		t.Fatalf("moves %+v: want vm0 to C", ex.Moves)
	}
	for _, c := range ex.Candidates["vm0"] {
		switch c.HostID {
		case "B":
			if c.Rejected != "capacity" || c.Binding != "mem" || !strings.HasPrefix(c.Reason, "mem at step") {
				t.Errorf("B: %+v: want rejected by capacity on mem", c)
			}
		case "C":
			if c.Rejected != "" || c.Binding == "" {
				t.Errorf("C: %+v: want feasible with its binding resource named", c)
			}
		}
	}
}

func TestMultiThresholdActsOnEveryResourceAndIgnoresUnknownCapacity(t *testing.T) {
	s := snap(2, [3]float64{0, 100, 1000}, [3]float64{1, 100, 1000})
	s.VMs[0].Demand.Net = 110000 // 88 % of A's NIC, CPU at 2 %
	d := policy.MultiThreshold{T: 0.8}
	st := cluster.New(s, nil)
	if r, over := d.Binding(st, 0, -1); !over || r != model.Net {
		t.Errorf("A at 88 %% network: overloaded %v on %s, want net", over, r)
	}
	if d.Overloaded(st, 1, -1) {
		t.Error("B is idle in every resource")
	}
	s.Hosts[0].Capacity.Net = 0 // unknown: never binds, never divides
	if d.Overloaded(cluster.New(s, nil), 0, -1) {
		t.Error("an unknown network capacity made A overloaded")
	}
	p, err := ParsePolicy("mthr-mmt-0.8")
	if err != nil {
		t.Fatal(err)
	}
	s.Hosts[0].Capacity.Net = 125000
	plan := Decide(s, nil, p, nil)
	if len(plan.Overloaded) != 1 || plan.Overloaded[0] != 0 {
		t.Errorf("mthr-mmt-0.8 overloaded %v, want [A]", plan.Overloaded)
	}
	if thr, _ := ParsePolicy("thr-mmt-0.8"); len(Decide(s, nil, thr, nil).Overloaded) != 0 {
		t.Error("thr-mmt-0.8 must stay CPU-only")
	}
	if _, err := ParsePolicy("mthr-mmt-1.5"); err == nil {
		t.Error("mthr-mmt-1.5 accepted")
	}
}

func TestUnknownCapacitiesAreUnconstrained(t *testing.T) {
	// A live host may report no network or disk capacity (0): decisions must not
	// divide by it or treat it as full.
	s, f := memClimb()
	for h := range s.Hosts {
		s.Hosts[h].Capacity.Net, s.Hosts[h].Capacity.Disk = 0, 0
	}
	for v := range s.VMs {
		s.VMs[v].Demand.Net, s.VMs[v].Demand.Disk = 5000, 5000
	}
	for _, name := range []string{"headroom", "mthr-mmt-0.8"} {
		p, _ := ParsePolicy(name)
		plan := Decide(s, f, p, nil)
		for _, u := range plan.Unplaced {
			t.Errorf("%s: unplaced %+v with unknown network and disk capacity", name, u)
		}
	}
}

func TestTargetsMustHaveRoomForTheCooldown(t *testing.T) {
	// Horizon 30 min, cooldown 1 h at 300 s: the policy asks for 12 steps and its
	// triggers read 6. Host A breaches at step 1; vm1 must leave. B's VM peaks at
	// step 9, after the horizon but inside the hour vm1 would be pinned there, so
	// vm1 goes to C.
	p := headroomPolicy(t, func(c *policy.HeadroomConfig) {
		c.Placement.Scorers = []policy.WeightedStep{{Name: "packing", Weight: 1}}
		c.Thrash.RoomForCooldown = true
	})
	if got := p.HorizonSteps(300); got != 12 {
		t.Fatalf("HorizonSteps(300) = %d, want 12 (the cooldown)", got)
	}
	s := snap(3, [3]float64{0, 2500, 1740}, [3]float64{0, 2900, 613}, [3]float64{1, 500, 870}, [3]float64{2, 500, 870})
	s.VMs[1].Size.CPU = 3000
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(12, 2500)...)
	f = fc(s, f, 1, 10, flat(12, 2900)...)
	peak := flat(12, 500)
	peak[8] = 3000 // B's VM at step 9
	f = fc(s, f, 2, 10, peak...)
	f = fc(s, f, 3, 10, flat(12, 500)...)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	if len(ex.Moves) != 1 || ex.Moves[0].VMInstanceID != "vm1" || ex.Moves[0].TargetHostID != "C" {
		t.Fatalf("moves %+v: want vm1 to C", ex.Moves)
	}
	for _, c := range ex.Candidates["vm1"] {
		if c.HostID == "B" && !strings.HasPrefix(c.Reason, "cpu at step 9") {
			t.Errorf("B: %+v, want rejected on cpu at step 9", c)
		}
	}
	// If C's VM peaks inside the hour too, no host has room for the whole
	// cooldown: relief still moves vm1 to a host with room for the horizon,
	// rather than leave A in its breach, and says so.
	f = fc(s, f, 3, 10, peak...)
	plan := Decide(s, f, p, nil)
	if len(plan.Moves) != 1 || plan.Moves[0].VMInstanceID != "vm1" || !strings.Contains(plan.Moves[0].Reason.Detail, "no host has room for the whole cooldown") {
		t.Errorf("moves %+v: want vm1 moved to a host with room for the horizon", plan.Moves)
	}
	// The trigger still reads only the horizon: a breach at step 9 alone is not
	// acted on.
	s2 := snap(2, [3]float64{0, 500, 870})
	late := flat(12, 500)
	late[8] = 6000
	if plan := Decide(s2, fc(s2, nil, 0, 10, late...), p, nil); len(plan.Overloaded) != 0 {
		t.Errorf("a breach past the horizon triggered: %+v", plan)
	}
}
