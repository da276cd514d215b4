package core

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// bigCluster is 10,000 hosts and 100,000 VMs with six-step forecasts; about 2 % of
// hosts trend into overload and many are lightly used.
func bigCluster(hosts, vms int) (*model.Snapshot, []model.ResourceForecast) {
	r := rand.New(rand.NewPCG(1, 2))
	s := &model.Snapshot{Time: 36000, Interval: 300}
	for h := 0; h < hosts; h++ {
		s.Hosts = append(s.Hosts, model.Host{ID: fmt.Sprintf("h%d", h), Capacity: model.Resources{CPU: 5320, Mem: 65536, Net: 125000},
			PEs: 2, PEMIPS: 2660, Power: g5})
	}
	fc := make([]model.ResourceForecast, vms)
	for v := 0; v < vms; v++ {
		h := v % hosts
		d := r.Float64() * 900
		if h%50 == 0 {
			d = 500 + r.Float64()*400 // hot hosts
		}
		s.VMs = append(s.VMs, model.VM{ID: fmt.Sprintf("v%d", v), Host: h, Size: model.Resources{CPU: 1000, Mem: 1024}, VCPU: 1,
			Demand: model.Resources{CPU: d}})
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, v)
		f := model.ResourceForecast{VMInstanceID: s.VMs[v].ID, Step: 300, Confidence: 0.9}
		for k := 1; k <= 6; k++ {
			p := d * (1 + 0.05*float64(k)*float64(h%50/49))
			f.PredictedCPU = append(f.PredictedCPU, p)
			f.Upper = append(f.Upper, model.Resources{CPU: p * 1.2})
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
