package core

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// bigCluster is 10,000 hosts and 100,000 VMs with six-step forecasts of all four
// resources; about 2 % of hosts trend into CPU overload, as many others into memory,
// network or disk overload, and many are lightly used.
func bigCluster(hosts, vms int) (*model.Snapshot, []model.ResourceForecast) {
	r := rand.New(rand.NewPCG(1, 2))
	s := &model.Snapshot{Time: 36000, Interval: 300}
	for h := 0; h < hosts; h++ {
		s.Hosts = append(s.Hosts, model.Host{ID: fmt.Sprintf("h%d", h), Capacity: model.Resources{CPU: 5320, Mem: 32768, Net: 125000, Disk: 200000},
			PEs: 2, PEMIPS: 2660, Power: g5})
	}
	fc := make([]model.ResourceForecast, vms)
	for v := 0; v < vms; v++ {
		h := v % hosts
		d := model.Resources{CPU: r.Float64() * 900, Mem: r.Float64() * 4000, Net: r.Float64() * 20000, Disk: r.Float64() * 30000}
		if h%50 == 0 {
			d.CPU = 500 + r.Float64()*400 // hot hosts
		}
		s.VMs = append(s.VMs, model.VM{ID: fmt.Sprintf("v%d", v), Host: h, Size: model.Resources{CPU: 1000, Mem: 8192}, VCPU: 1,
			Demand: d})
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, v)
		f := model.ResourceForecast{VMInstanceID: s.VMs[v].ID, Step: 300, Confidence: 0.9}
		// Hosts h%50 == 0 trend in CPU, 1 in memory, 2 in network, 3 in disk.
		trend := func(k int, which int) float64 {
			if h%50 == which {
				return 1 + 0.05*float64(k)*[4]float64{1, 3, 3, 3}[which]
			}
			return 1
		}
		for k := 1; k <= 6; k++ {
			p := model.Resources{CPU: d.CPU * trend(k, 0), Mem: d.Mem * trend(k, 1), Net: d.Net * trend(k, 2), Disk: d.Disk * trend(k, 3)}
			f.PredictedCPU = append(f.PredictedCPU, p.CPU)
			f.PredictedMemory = append(f.PredictedMemory, p.Mem)
			f.PredictedNetworkIO = append(f.PredictedNetworkIO, p.Net)
			f.PredictedDiskIO = append(f.PredictedDiskIO, p.Disk)
			f.Upper = append(f.Upper, p.Scale(1.2))
		}
		fc[v] = f
	}
	for h := range s.Hosts {
		u := 0.0
		for _, v := range s.Hosts[h].VMs {
			u += s.VMs[v].Demand.CPU
		}
		s.Hosts[h].Util = u / 5320
	}
	return s, fc
}

// BenchmarkDecide100kVMs10kHosts is the target: one Decide cycle for
// 100,000 VMs on 10,000 hosts in at most 1 s and 4 GiB.
func BenchmarkDecide100kVMs10kHosts(b *testing.B) {
	s, fc := bigCluster(10000, 100000)
	p, err := ParsePolicy("headroom")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var moves int
	for b.Loop() {
		moves = len(Decide(s, fc, p, nil).Moves)
	}
	b.ReportMetric(float64(moves), "moves")
}

// TestBigClusterBreachesEveryResource keeps the benchmark honest: its cluster must
// have hosts at risk in each of the four resources, so that Decide does the
// four-resource work the target is about.
func TestBigClusterBreachesEveryResource(t *testing.T) {
	s, fc := bigCluster(200, 2000)
	p, _ := ParsePolicy("headroom")
	ex := p.(*Headroom).Explain(Input{Snapshot: s, Forecasts: fc})
	seen := map[string]int{}
	for _, r := range ex.Risks {
		seen[r.Resource]++
	}
	for _, r := range []string{"cpu", "mem", "net", "disk"} {
		if seen[r] == 0 {
			t.Errorf("no host at risk in %s (risks by resource: %v)", r, seen)
		}
	}
}
