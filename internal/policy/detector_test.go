package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// lrPlain is LR.Overloaded as it was before the per-host caches: the full
// History and a loop over the host's VMs. Tests compare the two.
func lrPlain(d LR, st *cluster.State, h, v int) bool {
	hist := st.History(h, v)
	if len(hist) < lrWindow {
		return fallback.Overloaded(st, h, v)
	}
	var sx, sy, sxx, sxy float64
	for i := 0; i < lrWindow; i++ {
		x := float64(i + 1)
		y := hist[lrWindow-1-i]
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	n := float64(lrWindow)
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icept := (sy - slope*sx) / n
	m := 0.0
	for _, x := range st.VMs(h) {
		m = max(m, st.MigrationSeconds(x, h))
	}
	if v >= 0 {
		m = max(m, st.MigrationSeconds(v, h))
	}
	steps := math.Ceil(m / st.Snap.Interval)
	return (icept+slope*(n+steps))*d.S >= 1
}

// randomLRState is a small fleet whose VMs have histories of random length,
// some with zero tails (so History's trimming matters), some with their own
// migration estimate, some memory-bound.
func randomLRState(rng *rand.Rand) *cluster.State {
	hosts, vms := 1+rng.IntN(5), 1+rng.IntN(14)
	s := &model.Snapshot{Interval: []float64{300, 1, 30}[rng.IntN(3)]}
	for h := range hosts {
		s.Hosts = append(s.Hosts, model.Host{ID: fmt.Sprint("h", h), Capacity: model.Resources{CPU: 1000 + 3000*rng.Float64(), Mem: 8000, Net: []float64{1e5, 1e3, 0}[rng.IntN(3)]}})
	}
	for v := range vms {
		h := rng.IntN(hosts)
		vm := model.VM{ID: fmt.Sprint("v", v), Host: h, Size: model.Resources{CPU: 2000 * rng.Float64(), Mem: 4000 * rng.Float64()},
			Demand: model.Resources{CPU: 1000 * rng.Float64()}}
		if rng.IntN(3) == 0 {
			vm.MigrationSeconds = 600 * rng.Float64()
		}
		n := rng.IntN(31)
		for i := range n {
			u := rng.Float64()
			if i >= n-rng.IntN(12) || rng.IntN(8) == 0 {
				u = 0
			}
			vm.History = append(vm.History, u)
		}
		s.VMs = append(s.VMs, vm)
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, v)
	}
	return cluster.New(s, nil)
}

// LR through the per-host caches (RecentHistory, HostMaxMigrationSeconds)
// decides as the plain computation does, after any sequence of Adds and Removes.
func TestLRCachedDecidesAsPlain(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 12))
	calls, over := 0, 0
	for trial := range 400 {
		st := randomLRState(rng)
		hosts, vms := len(st.Snap.Hosts), len(st.Snap.VMs)
		d := LR{S: []float64{1.2, 1, 2.5, 0.5}[rng.IntN(4)]}
		for op := range 40 {
			for h := range hosts {
				for v := -1; v < vms; v++ {
					got, want := d.Overloaded(st, h, v), lrPlain(d, st, h, v)
					if got != want {
						t.Fatalf("trial %d op %d: host %d vm %d: cached %v, plain %v", trial, op, h, v, got, want)
					}
					calls++
					if got {
						over++
					}
				}
			}
			v := rng.IntN(vms)
			if h := st.HostOf(v); h >= 0 {
				st.Remove(v, h)
			} else {
				st.Add(v, rng.IntN(hosts))
			}
		}
	}
	if over == 0 || over == calls {
		t.Fatalf("%d of %d calls overloaded: the test does not tell", over, calls)
	}
}

// lrPredPlain is the line lrPlain extrapolates (S = 1), and whether lrPlain
// takes the regression at all.
func lrPredPlain(st *cluster.State, h, v int) (float64, bool) {
	hist := st.History(h, v)
	if len(hist) < lrWindow {
		return 0, false
	}
	var sx, sy, sxx, sxy float64
	for i := 0; i < lrWindow; i++ {
		x := float64(i + 1)
		y := hist[lrWindow-1-i]
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	n := float64(lrWindow)
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icept := (sy - slope*sx) / n
	steps := math.Ceil(maxMigrationSeconds(st, h, v) / st.Snap.Interval)
	return icept + slope*(n+steps), true
}

// The shortcut (settled) must decide as the plain fit even when the line is
// next to the threshold: S is set so that S times the line is 1 within a few
// units of rounding, and further off, on both sides. It must also settle most
// calls far from it, or it would save nothing.
func TestLRSettledDecidesAsPlainNearTheThreshold(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 21))
	sure, unsure := 0, 0
	for trial := range 300 {
		st := randomLRState(rng)
		hosts, vms := len(st.Snap.Hosts), len(st.Snap.VMs)
		for op := range 20 {
			for h := range hosts {
				for v := -1; v < vms; v++ {
					pred, ok := lrPredPlain(st, h, v)
					if !ok || !(pred > 0) {
						continue
					}
					for _, rel := range []float64{0, 1e-16, -1e-16, 3e-16, -3e-16, 1e-12, -1e-12, 1e-9, -1e-9, 1e-6, -1e-6, 0.1, -0.1} {
						d := LR{S: 1 / pred * (1 + rel)}
						got, want := d.Overloaded(st, h, v), lrPlain(d, st, h, v)
						if got != want {
							t.Fatalf("trial %d op %d: host %d vm %d S %v: cached %v, plain %v", trial, op, h, v, d.S, got, want)
						}
						if _, s := d.settled(st, h, v); s {
							sure++
						} else {
							unsure++
						}
					}
				}
			}
			v := rng.IntN(vms)
			if h := st.HostOf(v); h >= 0 {
				st.Remove(v, h)
			} else {
				st.Add(v, rng.IntN(hosts))
			}
		}
	}
	if sure == 0 || unsure == 0 {
		t.Fatalf("settled %d, left to the plain fit %d: the test does not tell", sure, unsure)
	}
	t.Logf("settled %d, left to the plain fit %d", sure, unsure)
}

// Whenever HostFloor and VMFloor say a host is sure to be overloaded with a VM,
// the plain fit says so too, for S next to the threshold and further off; and
// they say it often enough to matter.
func TestLRFloorsOnlyPassOverOverloadedHosts(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 30))
	said, over := 0, 0
	for trial := range 300 {
		st := randomLRState(rng)
		hosts, vms := len(st.Snap.Hosts), len(st.Snap.VMs)
		for op := range 20 {
			for h := range hosts {
				if st.InUse(h) == 0 {
					continue
				}
				for v := 0; v < vms; v++ {
					pred, ok := lrPredPlain(st, h, v)
					if !ok || !(pred > 0) {
						continue
					}
					for _, rel := range []float64{0, 1e-16, -1e-16, 1e-12, -1e-12, 1e-9, -1e-9, 1e-6, -1e-6, 0.1, -0.1, 0.5} {
						d := LR{S: 1 / pred * (1 + rel)}
						f := d.HostFloor(st, h) + d.VMFloor(st, v, st.Snap.Hosts[h].Capacity.CPU)
						if f*d.S >= 1+1e-9 {
							said++
							if !lrPlain(d, st, h, v) {
								t.Fatalf("trial %d op %d: host %d vm %d S %v: floor %v says overloaded, the plain fit (line %v) does not", trial, op, h, v, d.S, f, pred)
							}
						}
						if lrPlain(d, st, h, v) {
							over++
						}
					}
				}
			}
			v := rng.IntN(vms)
			if h := st.HostOf(v); h >= 0 {
				st.Remove(v, h)
			} else {
				st.Add(v, rng.IntN(hosts))
			}
		}
	}
	if said == 0 {
		t.Fatal("the floors never said overloaded: the test does not tell")
	}
	t.Logf("floors said overloaded %d times of %d", said, over)
}
