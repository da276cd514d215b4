package sim

import (
	"math"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/trace"
)

// twoVMs is a multi-resource workload: both VMs start small and, from the second
// sample on, use 600 of 1000 MB each and 70 KB/s of network; disk stays 0.
func twoVMs() *trace.Workload {
	w := &trace.Workload{Name: "two", Kind: "bitbrains", Step: 300}
	for _, id := range []string{"a", "b"} {
		s := trace.Series{ID: id, CPUCapacity: 1000, MemCapacity: 1000}
		for k := range 12 {
			mem, net := float32(0.6), float32(70)
			if k == 0 {
				mem, net = 0.3, 40
			}
			s.CPU = append(s.CPU, 0.1)
			s.Mem = append(s.Mem, mem)
			s.Net = append(s.Net, net)
			s.Disk = append(s.Disk, 0)
		}
		w.VMs = append(w.VMs, s)
	}
	return w
}

func TestByResourceCountsMemoryForEveryVMAndSharesNetwork(t *testing.T) {
	w := twoVMs()
	cfg := BitbrainsConfig(w)
	cfg.Hosts = 1
	cfg.HostTypes = []HostType{{Name: "small", CPU: 1000, MemMB: 1000, NetKBs: 100, DiskKBs: 100, Power: HPProLiantG5.Power}}
	pol, _ := core.ParsePolicy("dvfs")
	r, err := Run(w, pol, Options{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	br := r.ByResource
	// Memory: 1200 of 1000 MB all the time: every VM violated, all memory unmet.
	if m := br["mem"]; m.SLATAH != 1 || m.Unmet != 1 {
		t.Errorf("mem %+v: want slatah 1, unmet 1", m)
	}
	// Network: 140 of 100 KB/s shared out: 40/140 unmet.
	if n := br["net"]; n.SLATAH != 1 || math.Abs(n.Unmet-40.0/140) > 1e-9 {
		t.Errorf("net %+v: want slatah 1, unmet %.4f", n, 40.0/140)
	}
	if d, c := br["disk"], br["cpu"]; d.SLATAH != 0 || d.Unmet != 0 || c.SLATAH != 0 || c.Unmet != 0 {
		t.Errorf("disk %+v, cpu %+v: want no contention", d, c)
	}
}

// With 12 samples a VM's 99th percentile is its largest sample.
func TestBitbrainsHostsHoldTheLargestSingleVMDemand(t *testing.T) {
	w := twoVMs()
	w.VMs[1].Disk[5] = 900
	h := DerivedHostType(w)
	if math.Abs(h.CPU-100) > 1e-3 || math.Abs(h.MemMB-600) > 1e-3 || h.NetKBs != 70 || h.DiskKBs != 900 {
		t.Errorf("derived host %+v: want CPU 100, memory 600, network 70, disk 900", h)
	}
	if c := ConfigFor(w); !c.MultiResource || c.Hosts != 2 || !c.KeepIdleVMs {
		t.Errorf("bitbrains config %+v: want multi-resource, one host per VM, idle VMs kept", c)
	}
	if c := ConfigFor(&trace.Workload{Kind: "planetlab"}); c.MultiResource || c.Hosts != 800 {
		t.Error("planetlab must keep CloudSim's experiment")
	}
}

func TestMultiResourceRunMovesOffAMemoryBreach(t *testing.T) {
	// Two hosts; both VMs fit one at the start and then grow past its memory.
	// dvfs leaves them packed; headroom and mthr-mmt-0.8 keep or move them apart.
	w := twoVMs()
	cfg := BitbrainsConfig(w)
	cfg.HostTypes = []HostType{{Name: "small", CPU: 1000, MemMB: 1000, NetKBs: 1000, DiskKBs: 100, Power: HPProLiantG5.Power}}
	want := map[string]bool{"dvfs": true, "headroom": false, "mthr-mmt-0.8": false}
	for name, breach := range want {
		pol, _ := core.ParsePolicy(name)
		r, err := Run(w, pol, Options{Config: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.ByResource["mem"].SLATAH; (got > 0.5) != breach {
			t.Errorf("%s: mem slatah %.3f, want a breach most of the run: %v", name, got, breach)
		}
	}
}

// A host holds the largest 99th percentile of any one VM's demand, and a VM's
// demand is clipped there: a VM whose network is 100 KB/s but for two five-minute
// bursts of 9000 gets a 100 KB/s NIC, and alone on it never breaches it.
func TestHostsHoldTheLargestSingleVM99thPercentileAndClip(t *testing.T) {
	w := &trace.Workload{Name: "burst", Kind: "bitbrains", Step: 300}
	s := trace.Series{ID: "a", CPUCapacity: 1000, MemCapacity: 1000}
	for k := range 200 {
		net := float32(100)
		if k == 50 || k == 150 {
			net = 9000
		}
		s.CPU = append(s.CPU, 0.5)
		s.Mem = append(s.Mem, 0.5)
		s.Net = append(s.Net, net)
		s.Disk = append(s.Disk, 10)
	}
	w.VMs = append(w.VMs, s)
	h := DerivedHostType(w)
	if h.NetKBs != 100 || h.DiskKBs != 10 || math.Abs(h.CPU-500) > 1e-3 {
		t.Fatalf("derived host %+v: want network 100, disk 10, CPU 500", h)
	}
	cfg := BitbrainsConfig(w)
	pol, _ := core.ParsePolicy("dvfs")
	r, err := Run(w, pol, Options{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.ByResource["net"]; n.SLATAH != 0 || n.Unmet != 0 {
		t.Errorf("net %+v: a VM alone must never exceed its host", n)
	}
}
