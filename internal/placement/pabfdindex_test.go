package placement

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/policy"
)

// The index must find the very host a plain scan finds (pabfdScan, PABFD's
// checks in index order) with the same exclusions, while hosts fill and empty
// and the exclusions grow; and each bucket's bound must be at most the bound of
// every host in it, and that at most the host's rise, which is what lets the
// search stop early and pass hosts over.
func TestPABFDIndexFindsAsThePlainScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 11))
	found, bounded, passed := 0, 0, 0
	for i := range 3000 {
		st := randomState(rng)
		n := len(st.Snap.Hosts)
		var det policy.Detector = policy.Threshold{T: 0.5 + 0.5*rng.Float64()}
		if rng.IntN(2) == 0 {
			det = policy.LR{S: []float64{1.2, 0.8, 2}[rng.IntN(3)]}
			if rng.IntN(3) > 0 {
				// Histories long enough for LR's fit (so that its floors
				// pass hosts over), some with a zero now and then.
				for v := range st.Snap.VMs {
					vm := &st.Snap.VMs[v]
					for len(vm.History) < 10+rng.IntN(5) {
						u := rng.Float64()
						if rng.IntN(10) == 0 {
							u = 0
						}
						vm.History = append(vm.History, u)
					}
				}
				st = cluster.New(st.Snap, st.Forecasts)
			}
		}
		p := PABFD{Detector: det}
		excl := make([]bool, n)
		var given []bool
		if rng.IntN(2) == 0 {
			for h := range excl {
				excl[h] = rng.IntN(5) == 0
			}
			given = excl
		}
		ix := NewPABFDIndex(st, det, given)
		for range 3 * len(st.Snap.VMs) {
			v := rng.IntN(len(st.Snap.VMs))
			got, want := ix.Find(v), pabfdScan(p, st, v, excl)
			if got != want {
				t.Fatalf("case %d vm %d: index found %d, plain scan %d", i, v, got, want)
			}
			need := st.Need(v).CPU
			for g := range ix.groups {
				gr := &ix.groups[g]
				for b := range nBuckets {
					rf := riseFloor(&gr.p, need/gr.c, float64(b)/nBuckets, float64(b+1)/nBuckets)
					l := ix.buckets[g*nBuckets+b]
					if !slices.IsSortedFunc(l, cmpEntry) {
						t.Fatalf("case %d vm %d: bucket %d out of order", i, v, b)
					}
					lb := math.Inf(1)
					if len(l) > 0 {
						lb = rf + l[0].key
					}
					for _, e := range l {
						h := int(e.h)
						bounded++
						if key := gr.p.Power(st.InUse(h)/gr.c) - ix.info.powerNow[h]; key != e.key {
							t.Fatalf("case %d vm %d host %d: key %g kept, %g afresh", i, v, h, e.key, key)
						}
						if e.inUse != st.InUse(h) || e.pnow != ix.info.powerNow[h] {
							t.Fatalf("case %d vm %d host %d: entry holds %g in use and %g W, afresh %g and %g", i, v, h, e.inUse, e.pnow, st.InUse(h), ix.info.powerNow[h])
						}
						d := ix.info.delta(st, need, h)
						if ix.lr != nil && e.lo > math.Inf(-1) {
							if (e.lo+ix.lr.VMFloor(st, v, gr.c))*ix.lr.S >= 1+1e-9 {
								passed++
								if _, ok := st.NoRoomFor(v, h, st.Need(v)); ok && !det.Overloaded(st, h, v) {
									t.Fatalf("case %d vm %d host %d: passed over, but LR does not call it overloaded", i, v, h)
								}
							}
						}
						if lb > rf+e.key || rf+e.key > d {
							t.Fatalf("case %d vm %d host %d: bucket bound %g, host bound %g, rise %g", i, v, h, lb, rf+e.key, d)
						}
					}
				}
			}
			switch x := rng.IntN(4); {
			case got >= 0 && x < 2:
				found++
				if h := st.HostOf(v); h >= 0 {
					st.Remove(v, h)
				}
				st.Add(v, got)
			case x == 2:
				if h := st.HostOf(v); h >= 0 {
					st.Remove(v, h)
				}
			default:
				h := rng.IntN(n)
				ix.Exclude(h)
				excl[h] = true
			}
		}
	}
	if found == 0 || bounded == 0 || passed == 0 {
		t.Fatalf("%d finds placed, %d bucket bounds checked, %d hosts LR's floors pass over: the test checks nothing", found, bounded, passed)
	}
}

// deleteAt gives what slices.Delete gives, and the heap pops bounds in order.
func TestDeleteAtAndHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for range 2000 {
		n := 1 + rng.IntN(20)
		l := make([]int32, n)
		for i := range l {
			l[i] = int32(rng.IntN(100))
		}
		i := rng.IntN(n)
		want := slices.Delete(slices.Clone(l), i, i+1)
		if got := deleteAt(slices.Clone(l), i); !slices.Equal(got, want) {
			t.Fatalf("deleteAt(%v, %d) = %v, want %v", l, i, got, want)
		}
		q := make([]bucketBound, n)
		for i := range q {
			q[i].lb = float64(rng.IntN(10))
		}
		heapInit(q)
		last := math.Inf(-1)
		for len(q) > 0 {
			if q[0].lb < last {
				t.Fatalf("heap popped %g after %g", q[0].lb, last)
			}
			last = q[0].lb
			q = heapPop(q)
		}
	}
}
