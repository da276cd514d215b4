package cluster

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// RecentHistory and HostMaxMigrationSeconds read, after any sequence of Adds
// and Removes, what History and a loop over the host's VMs give afresh.
func TestLRCacheFollowsAddAndRemove(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 10))
	long, short := 0, 0
	for trial := range 300 {
		hosts, vms := 1+rng.IntN(6), 1+rng.IntN(20)
		st := randomState(rng, hosts, vms, 0)
		for v := range st.Snap.VMs {
			vm := &st.Snap.VMs[v]
			n := rng.IntN(31)
			vm.History = vm.History[:0]
			for i := range n {
				u := rng.Float64()
				if i >= n-rng.IntN(12) || rng.IntN(8) == 0 {
					u = 0
				}
				vm.History = append(vm.History, u)
			}
			if rng.IntN(3) == 0 {
				vm.MigrationSeconds = 100 * rng.Float64()
			}
			st.vmMigSecs[v] = vm.MigrationSeconds
			st.maxLen = max(st.maxLen, n)
		}
		for h := range hosts {
			st.hist[h] = nil
		}
		for op := range 60 {
			for range 3 { // read the caches so that a stale entry would be seen
				h := rng.IntN(hosts)
				st.HostMaxMigrationSeconds(h)
				var d [10]float64
				st.RecentHistory(h, -1, d[:])
			}
			v := rng.IntN(vms)
			if h := st.HostOf(v); h >= 0 {
				st.Remove(v, h)
			} else {
				st.Add(v, rng.IntN(hosts))
			}
			for h := range hosts {
				want := 0.0
				for _, x := range st.VMs(h) {
					want = max(want, st.MigrationSeconds(x, h))
				}
				if got := st.HostMaxMigrationSeconds(h); got != want {
					t.Fatalf("trial %d op %d: host %d longest migration %g, recomputed %g", trial, op, h, got, want)
				}
				for x := -1; x < vms; x++ {
					for _, k := range []int{0, 1, 5, 10, 30, 31} {
						full := slices.Clone(st.History(h, x))
						d := make([]float64, k)
						ok := st.RecentHistory(h, x, d)
						if ok != (len(full) >= k) {
							t.Fatalf("trial %d op %d: host %d vm %d k %d: long enough %v, History has %d", trial, op, h, x, k, ok, len(full))
						}
						if ok && !slices.Equal(d, full[:k]) {
							t.Fatalf("trial %d op %d: host %d vm %d: %v, History %v", trial, op, h, x, d, full[:k])
						}
						if k == 10 {
							if ok {
								long++
							} else {
								short++
							}
						}
					}
				}
			}
		}
	}
	if long == 0 || short == 0 {
		t.Fatalf("long %d, short %d: the test does not tell", long, short)
	}
}

// RecentSums are the sums of History's newest values within rounding, and ok
// only when History has that many.
func TestRecentSumsAreHistorysSums(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 13))
	oks := 0
	for trial := range 300 {
		hosts, vms := 1+rng.IntN(6), 1+rng.IntN(20)
		st := randomState(rng, hosts, vms, 0)
		for v := range st.Snap.VMs {
			vm := &st.Snap.VMs[v]
			n := rng.IntN(31)
			vm.History = vm.History[:0]
			for i := range n {
				u := rng.Float64()
				if i >= n-rng.IntN(12) || rng.IntN(8) == 0 {
					u = 0
				}
				vm.History = append(vm.History, u)
			}
			st.maxLen = max(st.maxLen, n)
		}
		for h := range hosts {
			st.hist[h] = nil
		}
		for op := range 40 {
			for h := range hosts {
				for x := -1; x < vms; x++ {
					sy, sxy, l1, ok := st.RecentSums(h, x)
					full := st.History(h, x)
					if !ok {
						continue
					}
					oks++
					if len(full) < RecentWindow {
						t.Fatalf("trial %d op %d: host %d vm %d: ok with %d values", trial, op, h, x, len(full))
					}
					var a, b, m float64
					for j := range RecentWindow {
						y := full[RecentWindow-1-j]
						a += y
						b += float64(j+1) * y
						m += math.Abs(y)
					}
					tol := 1e-13 * (1 + m)
					if math.Abs(a-sy) > tol || math.Abs(b-sxy) > 10*tol || math.Abs(m-l1) > tol {
						t.Fatalf("trial %d op %d: host %d vm %d: sums %g %g %g, History's %g %g %g", trial, op, h, x, sy, sxy, l1, a, b, m)
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
	if oks == 0 {
		t.Fatal("no sums were ok: the test does not tell")
	}
}
