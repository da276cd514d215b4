package core

import (
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// fc gives VM v a forecast with these points and a spread whose 90 % upper bound is
// point + up.
func fc(s *model.Snapshot, fcs []model.ResourceForecast, v int, up float64, points ...float64) []model.ResourceForecast {
	if fcs == nil {
		fcs = make([]model.ResourceForecast, len(s.VMs))
	}
	f := model.ResourceForecast{VMInstanceID: s.VMs[v].ID, Step: 300, Confidence: 0.9, PredictedCPU: points}
	for _, p := range points {
		f.Upper = append(f.Upper, model.Resources{CPU: p + up})
	}
	fcs[v] = f
	return fcs
}

func flat(n int, x float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = x
	}
	return out
}

func headroomPolicy(t *testing.T, edit func(*policy.HeadroomConfig)) *Headroom {
	cfg := policy.DefaultHeadroom()
	cfg.Underload.Enabled = false
	if edit != nil {
		edit(&cfg)
	}
	p, err := NewHeadroom("headroom", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Two VMs on host A whose summed forecast at step 1 has mean m and sd 500.
func overloadCase(mean float64) (*model.Snapshot, []model.ResourceForecast) {
	s := snap(3, [3]float64{0, 2000, 870}, [3]float64{0, 2000, 613}, [3]float64{1, 500, 870})
	sd := 500 / 1.2815515655446004 * 1.2815515655446004 // upper-point distance per VM
	var f []model.ResourceForecast
	// Per-VM spread u gives host sd = sqrt(2)*u/z; choose u so host sd = 500.
	u := sd / 1.4142135623730951 * 1.2815515655446004
	f = fc(s, f, 0, u, mean/2, mean/2, mean/2)
	f = fc(s, f, 1, u, mean/2, mean/2, mean/2)
	f = fc(s, f, 2, 10, 500, 500, 500)
	return s, f
}

func TestOverloadProbabilityJustBelowTriggerDoesNotMove(t *testing.T) {
	p := headroomPolicy(t, nil) // threshold 100 %, probability 0.5
	// Mean just under capacity: P(> 5320) slightly below 0.5.
	s, f := overloadCase(5310)
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 0 {
		t.Errorf("P just below 0.5 moved %v", plan.Moves)
	}
	// Mean just over capacity: P slightly above 0.5, and the breach is one step away.
	s, f = overloadCase(5330)
	plan := Decide(s, f, p, nil)
	if len(plan.Moves) == 0 {
		t.Fatal("P just above 0.5 at step 1 did not move")
	}
	m := plan.Moves[0]
	if m.Reason.Rule != "overload" || m.Priority != model.PriorityOverload || m.Reason.Probability < 0.5 {
		t.Errorf("move %+v: want an overload move with probability >= 0.5", m)
	}
	if m.Target == 0 {
		t.Error("moved onto the overloaded host itself")
	}
}

func TestLeadTimeWaitsForAFarBreach(t *testing.T) {
	p := headroomPolicy(t, nil)
	s := snap(2, [3]float64{0, 2000, 870}, [3]float64{0, 2000, 613})
	// Breach only at step 3 (900 s ahead): the next cycle (300 s) plus a 28 s migration
	// plus a 60 s margin still ends first, so wait.
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, 2000, 2000, 2900, 2900)
	f = fc(s, f, 1, 10, 2000, 2000, 2900, 2900)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	if len(ex.Moves) != 0 {
		t.Errorf("breach at step 3 moved %v", ex.Moves)
	}
	if len(ex.Risks) != 1 || ex.Risks[0].Step != 3 || ex.Risks[0].Acted {
		t.Errorf("risks %+v: want one unacted risk at step 3", ex.Risks)
	}
	// The same breach at step 1 is acted on now.
	f = fc(s, f, 0, 10, 2900, 2900, 2900, 2900)
	f = fc(s, f, 1, 10, 2900, 2900, 2900, 2900)
	if plan := Decide(s, f, p, nil); len(plan.Moves) == 0 {
		t.Error("breach at step 1 did not move")
	}
	// A longer margin makes step 3 urgent too.
	p2 := headroomPolicy(t, func(c *policy.HeadroomConfig) { c.LeadTime.Margin = 10 * time.Minute })
	f = fc(s, f, 0, 10, 2000, 2000, 2900, 2900)
	f = fc(s, f, 1, 10, 2000, 2000, 2900, 2900)
	if plan := Decide(s, f, p2, nil); len(plan.Moves) == 0 {
		t.Error("with a 10 min margin a breach 900 s ahead should be acted on")
	}
	// A transfer-model estimate in the snapshot replaces memory over bandwidth:
	// a VM that takes 10 minutes to move makes the step-3 breach urgent.
	s.VMs[1].MigrationSeconds = 600
	if plan := Decide(s, f, p, nil); len(plan.Moves) == 0 {
		t.Error("a 600 s migration and a breach 900 s ahead: should start now")
	}
	s.VMs[1].MigrationSeconds = 5
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 0 {
		t.Errorf("5 s and 28 s migrations and a breach 900 s ahead: moved %v", plan.Moves)
	}
}

func TestCoincidingPeaksDoNotLandTogether(t *testing.T) {
	p := headroomPolicy(t, func(c *policy.HeadroomConfig) {
		c.Placement.Scorers = []policy.WeightedStep{{Name: "packing", Weight: 1}}
	})
	// Host A overloaded now; the VM to move (vm1) peaks at step 2. Host B's VM peaks at
	// step 2 too; host C's VM peaks at step 4. Both B and C have room on average.
	s := snap(3, [3]float64{0, 2500, 1740}, [3]float64{0, 2900, 613}, [3]float64{1, 500, 870}, [3]float64{2, 500, 870})
	s.VMs[1].Size.CPU = 3000
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, 2500, 2500, 2500, 2500)
	f = fc(s, f, 1, 10, 1000, 2900, 1000, 1000)
	f = fc(s, f, 2, 10, 500, 2900, 500, 500)
	f = fc(s, f, 3, 10, 500, 500, 500, 2900)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	if len(ex.Moves) != 1 || ex.Moves[0].VMInstanceID != "vm1" {
		t.Fatalf("moves %+v: want vm1 moved", ex.Moves)
	}
	if got := ex.Moves[0].TargetHostID; got != "C" {
		t.Errorf("vm1 went to %s; B's peak coincides with vm1's at step 2, so it must go to C", got)
	}
	var bVerdict string
	for _, c := range ex.Candidates["vm1"] {
		if c.HostID == "B" {
			bVerdict = c.Rejected + ": " + c.Reason
		}
	}
	if !strings.HasPrefix(bVerdict, "capacity: cpu at step 2") {
		t.Errorf("B's verdict %q: want a capacity rejection at step 2", bVerdict)
	}
}

func TestCooldownKeepsRecentlyMovedVMsFromConsolidation(t *testing.T) {
	cfg := policy.DefaultHeadroom()
	p, _ := NewHeadroom("headroom", cfg)
	s := snap(3, [3]float64{0, 2000, 870}, [3]float64{1, 100, 613})
	s.Time = 10000
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(6, 2000)...)
	f = fc(s, f, 1, 10, flat(6, 100)...)
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 1 || plan.Moves[0].Reason.Rule != "underload" {
		t.Fatalf("moves %+v: want host B emptied", plan.Moves)
	}
	s.VMs[1].LastMigration = s.Time - 600 // moved 10 minutes ago; cooldown is an hour
	for _, m := range Decide(s, f, p, nil).Moves {
		if m.VMInstanceID == "vm1" {
			t.Errorf("a VM in cooldown was moved: %+v", m)
		}
	}
	s.VMs[1].LastMigration = s.Time - 2*3600 // cooled down
	if plan := Decide(s, f, p, nil); len(plan.Moves) != 1 || plan.Moves[0].VMInstanceID != "vm1" {
		t.Errorf("moves %+v: after the cooldown vm1 may move again", plan.Moves)
	}
}

func TestCooldownYieldsToAnOverloadNow(t *testing.T) {
	p := headroomPolicy(t, nil)
	s := snap(2, [3]float64{0, 2700, 870}, [3]float64{0, 2700, 613})
	s.VMs[0].Size.CPU, s.VMs[1].Size.CPU = 3000, 3000
	s.Time = 10000
	s.VMs[0].LastMigration, s.VMs[1].LastMigration = 9900, 9900
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(3, 2700)...)
	f = fc(s, f, 1, 10, flat(3, 2700)...)
	if plan := Decide(s, f, p, nil); len(plan.Moves) == 0 {
		t.Error("a host overloaded now must be relieved even inside the cooldown")
	}
}

func TestMustRulesAndNoSuitableHost(t *testing.T) {
	p := headroomPolicy(t, nil)
	s := snap(3, [3]float64{0, 2700, 870}, [3]float64{0, 2700, 613}, [3]float64{1, 100, 870})
	s.VMs[0].Size.CPU, s.VMs[1].Size.CPU = 3000, 3000
	s.Rules = []model.Rule{
		{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"vm1", "vm2"}},
		{Name: "not-c", Kind: model.HostAntiAffinity, Must: true, VMs: []string{"vm1"}, Hosts: []string{"C"}},
	}
	var f []model.ResourceForecast
	f = fc(s, f, 0, 10, flat(3, 2700)...)
	f = fc(s, f, 1, 10, flat(3, 2700)...)
	f = fc(s, f, 2, 10, flat(3, 100)...)
	ex := p.Explain(Input{Snapshot: s, Forecasts: f})
	for _, m := range ex.Moves {
		if m.VMInstanceID == "vm1" {
			t.Errorf("vm1 moved to %s despite its must rules", m.TargetHostID)
		}
	}
	found := false
	for _, u := range ex.Unplaced {
		if s.VMs[u.VM].ID == "vm1" && strings.HasPrefix(u.Reason, NoSuitableHost) &&
			strings.Contains(u.Reason, "anti-affinity") && strings.Contains(u.Reason, "host-affinity") {
			found = true
		}
	}
	if !found {
		t.Errorf("unplaced %+v: want vm1 with %q naming both rules", ex.Unplaced, NoSuitableHost)
	}
	// vm0 has no rules and can go to B or C.
	if len(ex.Moves) != 1 || ex.Moves[0].VMInstanceID != "vm0" {
		t.Errorf("moves %+v: want vm0 moved", ex.Moves)
	}
}

func TestHeadroomConfigErrorsNameTheField(t *testing.T) {
	for in, want := range map[string]string{
		"confidence: 1.5\n":                  "confidence: 1.5 must be in (0, 1)",
		"overload:\n  probability: 0\n":      "overload.probability",
		"anti_thrash:\n  cooldown: -1m\n":    "anti_thrash.cooldown",
		"placement:\n  filters: [nope]\n":    "",
		"horizon: soon\n":                    "line 1: cannot unmarshal",
		"bogus: 1\n":                         "field bogus not found",
		"overload:\n  threshold: .nan\n":     "overload.threshold",
		"placement:\n  target: 0\n":          "placement.target",
		"underload:\n  threshold: 1.5\n":     "underload.threshold",
		"anti_thrash:\n  max_per_cycle: 0\n": "anti_thrash.max_per_cycle",
		"placement:\n  fill: {gpu: 1}\n":     "placement.fill.gpu: unknown resource",
		"placement:\n  fill: {cpu: 0}\n":     "placement.fill.cpu: 0 must be in",
	} {
		cfg, err := policy.ParseHeadroom([]byte(in), "test.yaml")
		if want == "" {
			if err == nil {
				_, err = NewHeadroom("h", cfg)
			}
			want = `unknown filter "nope"`
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: error %v, want it to contain %q", in, err, want)
		}
	}
}

// On an overloaded host the VM to move is the one that takes the most risk away
// per second of migration: a climbing VM with a wide bound before a steady one
// with a larger mean, when both take as long to move.
func TestOverloadMovesTheRiskiestVM(t *testing.T) {
	p := headroomPolicy(t, nil)
	s := snap(2, [3]float64{0, 3000, 870}, [3]float64{0, 1500, 870})
	var f []model.ResourceForecast
	f = fc(s, f, 0, 50, 3000, 3000)   // steady
	f = fc(s, f, 1, 2500, 2500, 2500) // climbing: its 90 % bound is far above its mean
	plan := Decide(s, f, p, nil)
	if len(plan.Moves) == 0 || plan.Moves[0].VMInstanceID != "vm1" {
		t.Fatalf("moves %+v: want the climbing vm1 first", plan.Moves)
	}
	// Twice as slow to move, the climbing VM no longer wins.
	s.VMs[0].MigrationSeconds, s.VMs[1].MigrationSeconds = 10, 40
	if plan := Decide(s, f, p, nil); len(plan.Moves) == 0 || plan.Moves[0].VMInstanceID != "vm0" {
		t.Fatalf("moves %+v: want vm0 when vm1 takes 4x as long", plan.Moves)
	}
}

// A policy that triggers far below capacity still places up to an explicit
// placement.fill, and by default never fills a host past its trigger.
func TestPlacementFillOverridesTheTriggerLimit(t *testing.T) {
	eager := func(c *policy.HeadroomConfig) { c.Overload.Threshold = 0.01 }
	p := headroomPolicy(t, eager)
	s := snap(3, [3]float64{0, 2000, 870}, [3]float64{1, 500, 870})
	if got := p.context(cluster.New(s, nil), 1.28).Limits.CPU; got != 0.01 {
		t.Errorf("default CPU fill limit %v, want target x threshold = 0.01", got)
	}
	p = headroomPolicy(t, func(c *policy.HeadroomConfig) {
		eager(c)
		c.Placement.Fill = map[string]float64{"cpu": 0.9}
	})
	if got := p.context(cluster.New(s, nil), 1.28).Limits.CPU; got != 0.9 {
		t.Errorf("CPU fill limit %v with placement.fill.cpu 0.9", got)
	}
}

// The room check's forecast length is capped at the engine's longest horizon.
func TestHorizonStepsCappedForLongCooldowns(t *testing.T) {
	p := headroomPolicy(t, func(c *policy.HeadroomConfig) { c.Thrash.Cooldown, c.Thrash.RoomForCooldown = time.Hour, true })
	if got := p.HorizonSteps(2); got != 1024 {
		t.Errorf("1 h cooldown at 2 s steps: %d forecast steps, want the cap 1024", got)
	}
	if got := p.HorizonSteps(300); got != 12 {
		t.Errorf("1 h cooldown at 300 s steps: %d forecast steps, want 12", got)
	}
	p = headroomPolicy(t, func(c *policy.HeadroomConfig) { c.Thrash.Cooldown = time.Hour })
	if got := p.HorizonSteps(300); got != 6 {
		t.Errorf("without room_for_cooldown: %d forecast steps, want the horizon's 6", got)
	}
}
