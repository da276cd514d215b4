package placement

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// A VM that fits host A on CPU at every step, and on the network now, but whose
// network forecast at step 2 takes A past its NIC, is rejected on the network;
// host B, whose traffic stays low, takes it.
func TestFitsOnCPUButNotOnNetworkAtAFutureStepIsRejected(t *testing.T) {
	s := fixture()
	for h := range s.Hosts {
		s.Hosts[h].Capacity.Net = 100000
	}
	s.VMs[0].Demand.Net = 60000
	s.VMs[1].Demand.Net = 10000
	s.VMs[2].Demand.Net = 20000
	fc := make([]model.ResourceForecast, 3)
	for v := range fc {
		d := s.VMs[v].Demand
		f := model.ResourceForecast{VMInstanceID: s.VMs[v].ID, Step: 300, Confidence: 0.9}
		for k := range 3 {
			net := d.Net
			if v == 2 && k == 1 {
				net = 45000 // z's traffic peaks at step 2: 60000 + 45000 > 100000
			}
			f.PredictedCPU = append(f.PredictedCPU, d.CPU)
			f.PredictedNetworkIO = append(f.PredictedNetworkIO, net)
			f.Upper = append(f.Upper, model.Resources{CPU: d.CPU, Net: net})
		}
		fc[v] = f
	}
	st := cluster.New(s, fc)
	c := NewContext(st, 1.2816, 1.0)
	c.Resources = model.AllResources
	c.explain = true
	if why := (capacityFilter{}).Reject(c, 2, 0); !strings.HasPrefix(why, "net at step 2") {
		t.Errorf("A: %q, want a rejection on the network at step 2", why)
	}
	if why := (capacityFilter{}).Reject(c, 2, 1); why != "" {
		t.Errorf("B: %q, want a pass", why)
	}
	// CPU alone, as before this check existed, A passes: the test needs the network.
	cpu := NewContext(st, 1.2816, 1.0)
	if why := (capacityFilter{}).Reject(cpu, 2, 0); why != "" {
		t.Errorf("A on CPU alone: %q, want a pass", why)
	}
	ch, _ := NewChain([]string{"capacity"}, []string{"packing"}, []float64{1})
	h, cands := ch.Select(c, 2, nil, true)
	if h != 1 {
		t.Errorf("selected host %d, want B", h)
	}
	for _, cd := range cands {
		if cd.HostID == "A" && (cd.Rejected != "capacity" || cd.Binding != "net") {
			t.Errorf("A's record %+v: want rejected by capacity, binding net", cd)
		}
	}
}

// The packing score is dominant-resource: a host full on memory but idle on CPU
// counts as full.
func TestPackingScoresTheDominantResource(t *testing.T) {
	s := fixture()
	s.VMs[0].Demand.Mem = 7000 // A: 25 % CPU, 85 % memory
	st := cluster.New(s, nil)
	c := NewContext(st, 1.2816, 1.0)
	c.Resources = model.AllResources
	v := 2
	s.VMs[v].Demand = model.Resources{CPU: 100, Mem: 100}
	a, ra := headroom(c, v, 0)
	c.memoV = -1
	b, rb := headroom(c, v, 1)
	if ra != model.Mem || !(a < b) {
		t.Errorf("A headroom %.3f on %s, B %.3f on %s: want A's memory to bind and leave less room", a, ra, b, rb)
	}
}

func TestZeroCapacityNeverBindsNorDivides(t *testing.T) {
	s := fixture()
	s.Hosts[0].Capacity = model.Resources{CPU: 4000} // memory, network, disk unknown
	s.VMs[2].Demand.Mem, s.VMs[2].Demand.Net = 1e6, 1e6
	st := cluster.New(s, nil)
	c := NewContext(st, 1.2816, 1.0)
	c.Resources = model.AllResources
	if why := (capacityFilter{}).Reject(c, 2, 0); why != "" {
		t.Errorf("unknown capacities rejected: %q", why)
	}
	if x, _ := headroom(c, 2, 0); x != x || x <= 0 {
		t.Errorf("headroom %v on a host with unknown capacities", x)
	}
}
