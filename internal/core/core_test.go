package core

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/placement"
	"github.com/headroom/headroom/internal/policy"
)

var g5 = model.PowerCurve{93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135}

// snap builds hosts of 2 x 2660 MIPS and VMs given as (host, demand MIPS, RAM MB).
func snap(hosts int, vms ...[3]float64) *model.Snapshot {
	s := &model.Snapshot{Interval: 300}
	for i := 0; i < hosts; i++ {
		s.Hosts = append(s.Hosts, model.Host{ID: string(rune('A' + i)), Capacity: model.Resources{CPU: 5320, Mem: 4096, Net: 125000},
			PEs: 2, PEMIPS: 2660, Power: g5})
	}
	for i, v := range vms {
		h := int(v[0])
		s.VMs = append(s.VMs, model.VM{ID: "vm" + string(rune('0'+i)), Host: h, Size: model.Resources{CPU: 2500, Mem: v[2]},
			VCPU: 2, Demand: model.Resources{CPU: v[1]}})
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, i)
	}
	for h := range s.Hosts {
		u := 0.0
		for _, v := range s.Hosts[h].VMs {
			u += s.VMs[v].Demand.CPU
		}
		s.Hosts[h].Util = u / s.Hosts[h].Capacity.CPU
	}
	return s
}

func TestThresholdJustBelowAndAbove(t *testing.T) {
	s := snap(1, [3]float64{0, 4256, 870}) // exactly 0.8 of 5320
	st := cluster.New(s, nil)
	if (policy.Threshold{T: 0.8}).Overloaded(st, 0, -1) {
		t.Error("utilisation equal to the threshold must not count as overloaded")
	}
	s.VMs[0].Demand.CPU = 4257
	if !(policy.Threshold{T: 0.8}).Overloaded(cluster.New(s, nil), 0, -1) {
		t.Error("utilisation just above the threshold must count as overloaded")
	}
}

func TestAdaptiveDetectorsFallBackOnShortHistory(t *testing.T) {
	s := snap(1, [3]float64{0, 4000, 870}) // 0.75: above the 0.7 fallback
	s.VMs[0].History = []float64{0.5, 0.5, 0.5}
	st := cluster.New(s, nil)
	for _, d := range []policy.Detector{policy.IQR{S: 1.5}, policy.MAD{S: 2.5}, policy.LR{S: 1.2}} {
		if !d.Overloaded(st, 0, -1) {
			t.Errorf("%s with 3 history values should fall back to THR 0.7 and call 0.75 overloaded", d.Name())
		}
	}
}

func TestLRSeesARisingTrend(t *testing.T) {
	s := snap(1, [3]float64{0, 2660, 870})
	// VM 2500 MIPS on a 5320 host: weight 0.47. History rising 0.1..1.0 (newest first).
	for i := 10; i >= 1; i-- {
		s.VMs[0].History = append(s.VMs[0].History, float64(i)/10)
	}
	st := cluster.New(s, nil)
	// Host history ends at 0.47 and rises 0.047 per step: at x=11, 0.517; x1.2 = 0.62 < 1.
	if (policy.LR{S: 1.2}).Overloaded(st, 0, -1) {
		t.Error("prediction 0.62 must not be overloaded")
	}
	if !(policy.LR{S: 2}).Overloaded(st, 0, -1) {
		t.Error("prediction x2 = 1.03 must be overloaded")
	}
}

func TestMMTPicksLeastMemoryFirstOnTies(t *testing.T) {
	s := snap(1, [3]float64{0, 100, 1740}, [3]float64{0, 100, 613}, [3]float64{0, 100, 613})
	if v := policy.MinimumMigrationTime(cluster.New(s, nil), 0); v != 1 {
		t.Errorf("MMT picked VM %d, want 1 (613 MB, first of the tie)", v)
	}
	s.VMs[1].MigratingTo = []int{0}
	if v := policy.MinimumMigrationTime(cluster.New(s, nil), 0); v != 2 {
		t.Errorf("MMT picked VM %d, want 2: VM 1 is already migrating", v)
	}
}

func TestPABFDPrefersLeastPowerIncreaseAndSkipsWouldBeOverloaded(t *testing.T) {
	// Host A at 0.75, host B at 0.35, host C empty; the VM asks for 0.1 of a host.
	s := snap(3, [3]float64{0, 3990, 870}, [3]float64{1, 1862, 870}, [3]float64{0, 532, 613})
	st := cluster.New(s, nil)
	st.Remove(2, 0)
	p := placement.PABFD{Detector: policy.Threshold{T: 0.8}}
	// A would reach 0.85 > 0.8: filtered. B: 35 %->45 % on the G5 curve costs 5.5 W;
	// C: 0->10 % costs 3.3 W, so the empty host wins.
	if h := p.Find(st, 2, nil); h != 2 {
		t.Errorf("PABFD chose host %d, want 2 (empty host, smallest power increase)", h)
	}
	if h := p.Find(st, 2, []bool{false, false, true}); h != 1 {
		t.Errorf("with C excluded PABFD chose %d, want 1", h)
	}
	if h := p.Find(st, 2, []bool{false, true, true}); h != -1 {
		t.Errorf("with only A left (would be overloaded) PABFD chose %d, want -1", h)
	}
}

func TestConsolidationRelievesOverloadAndEmptiesUnderloadedHost(t *testing.T) {
	// A overloaded (0.94), B moderately used (0.4), C lightly used (0.05), D off.
	s := snap(4,
		[3]float64{0, 2500, 1740}, [3]float64{0, 2500, 613},
		[3]float64{1, 2128, 870},
		[3]float64{2, 266, 870})
	pol, err := ParsePolicy("thr-mmt-0.8")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(s)
	plan := Decide(s, nil, pol, nil)
	after, _ := json.Marshal(s)
	if string(before) != string(after) {
		t.Fatal("Decide changed its input snapshot")
	}
	if !reflect.DeepEqual(plan.Overloaded, []int{0}) {
		t.Errorf("overloaded hosts %v, want [0]", plan.Overloaded)
	}
	var got []string
	for _, m := range plan.Moves {
		got = append(got, m.VMInstanceID+"->"+m.TargetHostID+":"+m.Reason.Rule)
	}
	// vm1 (613 MB) leaves A; B at 0.4 would reach 0.87, so the off host D takes it.
	// C (0.05) is then emptied onto B, which has room below 0.8.
	want := []string{"vm1->D:overload", "vm3->B:underload"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("moves %v, want %v", got, want)
	}
	for _, m := range plan.Moves {
		if m.Priority == 0 || m.Reason.Detail == "" {
			t.Errorf("move %+v lacks a priority or a reason", m)
		}
	}
}

func TestConsolidationCancelsAHostWhoseVMsDoNotAllFit(t *testing.T) {
	// B (0.75) and C (0.47): C's VM fits nowhere below 0.8 but on an off host, and off
	// hosts are not targets for consolidation, so nothing moves.
	s := snap(3, [3]float64{0, 3990, 870}, [3]float64{1, 2500, 870})
	pol, _ := ParsePolicy("thr-mmt-0.8")
	plan := Decide(s, nil, pol, nil)
	if len(plan.Moves) != 0 {
		t.Errorf("moves %+v, want none", plan.Moves)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for name, want := range map[string]string{
		"thr-mmt-1.5": "must be in (0, 1]",
		"lr-mmt-x":    "must be a positive number",
		"foo":         "unknown policy",
		"thr-mmu-0.8": "unknown policy",
		"mad-mmt--1":  "unknown policy",
	} {
		_, err := ParsePolicy(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicy(%q) = %v, want an error containing %q", name, err, want)
		}
	}
	for _, ok := range []string{"npa", "dvfs", "oracle", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "lrr-mmt-1.2"} {
		if p, err := ParsePolicy(ok); err != nil || p.Name() != ok {
			t.Errorf("ParsePolicy(%q) = %v, %v", ok, p, err)
		}
	}
}
