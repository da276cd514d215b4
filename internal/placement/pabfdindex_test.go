package placement

import (
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/policy"
)

// The index must find the very host a plain scan finds (pabfdScan, PABFD's
// checks in index order) with the same exclusions, while hosts fill and empty
// and the exclusions grow; and each bucket's bound must be at most the floor of
// every host in it, which is what lets the search stop early.
func TestPABFDIndexFindsAsThePlainScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 11))
	found, bounded := 0, 0
	for i := range 3000 {
		st := randomState(rng)
		n := len(st.Snap.Hosts)
		var det policy.Detector = policy.Threshold{T: 0.5 + 0.5*rng.Float64()}
		if rng.IntN(2) == 0 {
			det = policy.LR{S: 1.2}
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
					lb := riseFloor(&gr.p, need/gr.c, float64(b)/nBuckets, float64(b+1)/nBuckets) + gr.keyMin
					for _, h := range ix.buckets[g*nBuckets+b] {
						bounded++
						if f := ix.info.floor(st, need, int(h)); lb > f {
							t.Fatalf("case %d vm %d host %d: bucket bound %g above the floor %g", i, v, h, lb, f)
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
	if found == 0 || bounded == 0 {
		t.Fatalf("%d finds placed, %d bucket bounds checked: the test checks nothing", found, bounded)
	}
}
