package placement

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// three hosts of 4000 CPU; vm0 on A, vm1 on B, vm2 unplaced-by-choice on C.
func fixture() *model.Snapshot {
	s := &model.Snapshot{Interval: 300}
	for _, id := range []string{"A", "B", "C"} {
		s.Hosts = append(s.Hosts, model.Host{ID: id, Capacity: model.Resources{CPU: 4000, Mem: 8192}, PEs: 4, PEMIPS: 1000})
	}
	for i, h := range []int{0, 1, 2} {
		s.VMs = append(s.VMs, model.VM{ID: []string{"x", "y", "z"}[i], Host: h, Size: model.Resources{CPU: 2000, Mem: 1024}, VCPU: 2,
			Demand: model.Resources{CPU: 1000}})
		s.Hosts[h].VMs = []int{i}
	}
	return s
}

func TestFiltersEachRejectForTheirReason(t *testing.T) {
	s := fixture()
	s.Rules = []model.Rule{
		{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"z", "x"}},
		{Name: "not-b", Kind: model.HostAntiAffinity, Must: true, VMs: []string{"z"}, Hosts: []string{"B"}},
	}
	st := cluster.New(s, nil)
	c := NewContext(st, 1.2816, 1.0)
	if why := (antiAffinityFilter{}).Reject(c, 2, 0); !strings.Contains(why, "apart") {
		t.Errorf("anti-affinity on A: %q", why)
	}
	if why := (hostAffinityFilter{}).Reject(c, 2, 1); !strings.Contains(why, "not-b") {
		t.Errorf("host rule on B: %q", why)
	}
	// z asks for 1000; A holds 1000 of 4000 now: fits. At 3500 it does not.
	if why := (capacityFilter{}).Reject(c, 2, 0); why != "" {
		t.Errorf("capacity on A: %q, want a pass", why)
	}
	s.VMs[0].Demand.CPU = 3500
	st = cluster.New(s, nil)
	c = NewContext(st, 1.2816, 1.0)
	if why := (capacityFilter{}).Reject(c, 2, 0); why == "" {
		t.Error("capacity on A at 3500 + 1000 of 4000 should reject")
	}
	ch, err := NewChain([]string{"capacity", "anti-affinity", "host-affinity"}, []string{"packing"}, []float64{1})
	if err != nil {
		t.Fatal(err)
	}
	h, cands := ch.Select(c, 2, nil, true)
	if h != -1 {
		t.Fatalf("z placed on %d; A is full and has x, B is excluded by rule", h)
	}
	if got := RejectionSummary(cands); got != "capacity: 1 hosts, excluded: 1 hosts, host-affinity: 1 hosts" {
		t.Errorf("summary %q", got)
	}
	if _, err := NewChain([]string{"magic"}, nil, nil); err == nil || !strings.Contains(err.Error(), `unknown filter "magic"`) {
		t.Errorf("unknown filter: %v", err)
	}
	if _, err := NewChain(nil, []string{"packing"}, []float64{-1}); err == nil {
		t.Error("a negative weight must be refused")
	}
}

func TestPackingPrefersFullerRunningHosts(t *testing.T) {
	s := fixture()
	s.Hosts = append(s.Hosts, model.Host{ID: "D", Capacity: model.Resources{CPU: 4000, Mem: 8192}, PEs: 4, PEMIPS: 1000})
	s.VMs[1].Demand.CPU = 2000 // B fuller than A
	st := cluster.New(s, nil)
	st.Remove(2, 2) // z to be placed; C now empty too
	c := NewContext(st, 1.2816, 1.0)
	ch, _ := NewChain([]string{"capacity"}, []string{"packing"}, []float64{1})
	if h, _ := ch.Select(c, 2, nil, false); h != 1 {
		t.Errorf("packing chose %d, want B (running and fullest)", h)
	}
}
