package placement

import (
	"math/rand/v2"
	"testing"
)

// A selection without explain settles hosts on per-host summaries (quickReject)
// and takes the headroom score from the capacity pass; one with explain runs every
// check in full on every host. Both must choose the same host with the same
// rejection counts, and the score the capacity pass leaves must be headroomOf's.
func TestQuickChecksChooseAsTheFullChecks(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 3))
	_, names := StepNames()
	found, quick := 0, 0
	for i := range 2000 {
		st, ch, excl, c := randomSelection(t, rng, names)
		if rng.IntN(3) == 0 {
			c.Last = rng.IntN(3)
		}
		ref := NewContext(st, c.Z, c.Target)
		ref.Resources, ref.Peaks, ref.Limits, ref.Last = c.Resources, c.Peaks, c.Limits, c.Last
		for v := range st.Snap.VMs {
			got, gc := ch.Select(c, v, excl, false)
			want, wc := ch.Select(ref, v, excl, true)
			var filtered []Candidate
			for _, x := range wc {
				if x.Rejected != "excluded" {
					filtered = append(filtered, x)
				}
			}
			if got != want || RejectionSummary(gc) != RejectionSummary(filtered) {
				t.Fatalf("case %d vm %d: without explain %d (%s), with %d (%s)", i, v, got, RejectionSummary(gc), want, RejectionSummary(filtered))
			}
			for h := range st.Snap.Hosts {
				c.explain = false
				q := c.quickReject(v, h)
				c.explain = true
				full := (capacityFilter{}).Reject(c, v, h) != ""
				if q && !full {
					t.Fatalf("case %d vm %d host %d: quick check rejects, the full filter passes", i, v, h)
				}
				if q {
					quick++
				}
				if !full {
					if x, r := headroomOf(c, v, h); c.memo != x || c.memoR != r || c.memoV != v || c.memoH != h {
						t.Fatalf("case %d vm %d host %d: capacity pass left headroom %g (%s), headroomOf %g (%s)", i, v, h, c.memo, c.memoR, x, r)
					}
				}
			}
			if got >= 0 {
				found++
				if st.HostOf(v) < 0 && rng.IntN(2) == 0 {
					st.Add(v, got)
				}
			}
		}
	}
	if found == 0 || quick == 0 {
		t.Fatalf("%d selections found a host, %d hosts settled by the quick checks: the test checks nothing", found, quick)
	}
}
