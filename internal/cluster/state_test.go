package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// randomState is a fleet of hosts with VMs spread at random, each VM with a
// forecast of every resource and a recent peak.
func randomState(rng *rand.Rand, hosts, vms, steps int) *State {
	s := &model.Snapshot{Interval: 300}
	for h := range hosts {
		s.Hosts = append(s.Hosts, model.Host{ID: fmt.Sprint("h", h), Capacity: model.Resources{CPU: 4000, Mem: 8000, Net: 1e5, Disk: 1e5}})
	}
	fc := make([]model.ResourceForecast, vms)
	for v := range vms {
		h := rng.IntN(hosts)
		d := model.Resources{CPU: 1000 * rng.Float64(), Mem: 2000 * rng.Float64(), Net: 1e4 * rng.Float64(), Disk: 1e4 * rng.Float64()}
		s.VMs = append(s.VMs, model.VM{ID: fmt.Sprint("v", v), Host: h, Size: model.Resources{CPU: 1000, Mem: 2000}, Demand: d})
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, v)
		f := model.ResourceForecast{Confidence: 0.9}
		for range steps {
			f.PredictedCPU = append(f.PredictedCPU, 1000*rng.Float64())
			f.PredictedMemory = append(f.PredictedMemory, 2000*rng.Float64())
			f.PredictedNetworkIO = append(f.PredictedNetworkIO, 1e4*rng.Float64())
			f.PredictedDiskIO = append(f.PredictedDiskIO, 1e4*rng.Float64())
			f.Upper = append(f.Upper, model.Resources{CPU: 1500 * rng.Float64(), Mem: 3000 * rng.Float64(), Net: 2e4 * rng.Float64(), Disk: 2e4 * rng.Float64()})
		}
		// Some peaks below the need now (excess 0), some above.
		f.Peak = model.Resources{CPU: 1500 * rng.Float64(), Mem: 3000 * rng.Float64(), Net: 2e4 * rng.Float64(), Disk: 2e4 * rng.Float64()}
		fc[v] = f
	}
	return New(s, fc)
}

// The per-host caches (moments and the largest peak excess) must read, after any
// sequence of Adds and Removes, what summing the host's VMs afresh gives.
func TestHostCachesFollowAddAndRemove(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 15))
	for trial := range 200 {
		hosts, vms, steps := 1+rng.IntN(6), 1+rng.IntN(20), rng.IntN(4)
		st := randomState(rng, hosts, vms, steps)
		for op := range 60 {
			// Read some caches first so that a stale entry would be seen.
			for range 3 {
				h, r := rng.IntN(hosts), model.AllResources[rng.IntN(4)]
				st.HostPeakExcess(r, h)
				st.HostMoments(r, h)
				st.Summary(r, h)
				st.InUse(h)
			}
			v := rng.IntN(vms)
			if h := st.HostOf(v); h >= 0 {
				st.Remove(v, h)
			} else {
				st.Add(v, rng.IntN(hosts))
			}
			for h := range hosts {
				if got, want := st.InUse(h), st.inUseOf(h); got != want {
					t.Fatalf("trial %d op %d: host %d CPU in use %g, recomputed %g", trial, op, h, got, want)
				}
				for _, r := range model.AllResources {
					want := 0.0
					for _, x := range st.VMs(h) {
						want = max(want, st.PeakExcess(r, x))
					}
					if got := st.HostPeakExcess(r, h); got != want {
						t.Fatalf("trial %d op %d: host %d %s peak excess %g, recomputed %g", trial, op, h, r, got, want)
					}
					m := st.HostMoments(r, h)
					w := 0
					maxMu, maxVar := m[0], m[1]
					for s := 1; s <= steps; s++ {
						if m[2*s] > m[2*w] {
							w = s
						}
						maxMu, maxVar = max(maxMu, m[2*s]), max(maxVar, m[2*s+1])
					}
					sum := *st.Summary(r, h)
					if sum.Mu0 != m[0] || sum.Peak != want || sum.WorstStep != w || sum.WorstMu != m[2*w] || sum.WorstVar != m[2*w+1] ||
						sum.MaxMu != maxMu || sum.MaxVar != maxVar {
						t.Fatalf("trial %d op %d: host %d %s summary %+v; moments %v, peak excess %g", trial, op, h, r, sum, m, want)
					}
					for s := 0; s <= steps; s++ {
						mu, variance := 0.0, 0.0
						for _, x := range st.VMs(h) {
							a, b := st.VMMomentOf(r, x, s)
							mu += a
							variance += b
						}
						if m[2*s] != mu || m[2*s+1] != variance {
							t.Fatalf("trial %d op %d: host %d %s step %d moments (%g, %g), recomputed (%g, %g)",
								trial, op, h, r, s, m[2*s], m[2*s+1], mu, variance)
						}
					}
				}
			}
		}
	}
}
