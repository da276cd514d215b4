package placement

import (
	"math"
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

// A selection without explain passes over hosts certain to pass the capacity
// filter whose score bound is below the best so far (cannotWin). The bound must
// be at least the score the full checks give every host they pass, and a host
// it calls certain must pass; and pruned selections must choose as full scans,
// with the same counts (checked with every other shortcut in
// TestSkippingEmptyHostsChoosesAsTheFullScan).
func TestScoreBoundHoldsForEveryHostThatPasses(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 5))
	_, names := StepNames()
	bounded, pruned := 0, 0
	for i := range 2000 {
		st, ch, excl, c := randomSelection(t, rng, names)
		if rng.IntN(3) == 0 {
			c.Last = rng.IntN(3)
		}
		wsum := 0.0
		for _, s := range ch.Scorers {
			wsum += s.Weight
		}
		for v := range st.Snap.VMs {
			c.prepare(v)
			if ch.prunable(c, v, false) < 0 {
				continue
			}
			got, _ := ch.Select(c, v, excl, false)
			want, _ := ch.selectHost(c, v, excl, false, false)
			if got != want {
				t.Fatalf("case %d vm %d: pruned selection %d, full scan %d", i, v, got, want)
			}
			c.prepare(v)
			ch.prunable(c, v, false)
			bestScore := math.Inf(-1)
			type hb struct {
				h  int
				ub float64
			}
			var certain []hb
			for h := range st.Snap.Hosts {
				ub, ok := ch.scoreBound(c, v, h, wsum)
				c.explain = false
				c.checkedH = -1
				pass := (capacityFilter{}).Reject(c, v, h) == ""
				if ok && !pass {
					if _, room := st.NoRoomFor(v, h, c.vmNeed); room && !c.quickReject(v, h) {
						t.Fatalf("case %d vm %d host %d: bound says certain to pass, the full pass rejects", i, v, h)
					}
					continue // settled by the checks made before the bound
				}
				if !pass {
					continue
				}
				total := 0.0
				for _, s := range ch.Scorers {
					total += s.Weight * s.Score(c, v, h)
				}
				if wsum > 0 {
					total /= wsum
				}
				if ok {
					bounded++
					if total > ub {
						t.Fatalf("case %d vm %d host %d: score %g above its bound %g", i, v, h, total, ub)
					}
					certain = append(certain, hb{h, ub})
				}
				bestScore = max(bestScore, total)
			}
			for _, x := range certain {
				if x.ub+pruneSlack < bestScore {
					pruned++
				}
			}
		}
	}
	if bounded == 0 || pruned == 0 {
		t.Fatalf("%d hosts bounded, %d could be passed over: the test checks nothing", bounded, pruned)
	}
}

// ExcludeAlso must exclude exactly as the same hosts added to the mask: same
// choice, same counts, and with explain the same records.
func TestExcludeAlsoActsAsTheMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 7))
	_, names := StepNames()
	also := 0
	for i := range 1000 {
		st, ch, excl, c := randomSelection(t, rng, names)
		n := len(st.Snap.Hosts)
		seed := rng.Uint64()
		rule := func(v, h int) bool { return (uint64(v*131+h*7)^seed)%3 == 0 }
		for v := range st.Snap.VMs {
			mask := make([]bool, n)
			for h := range mask {
				mask[h] = (excl != nil && excl[h]) || rule(v, h)
				if mask[h] && (excl == nil || !excl[h]) {
					also++
				}
			}
			for _, explain := range []bool{false, true} {
				c.ExcludeAlso = rule
				got, gc := ch.Select(c, v, excl, explain)
				c.ExcludeAlso = nil
				want, wc := ch.Select(c, v, mask, explain)
				if got != want || RejectionSummary(gc) != RejectionSummary(wc) || len(gc) != len(wc) {
					t.Fatalf("case %d vm %d explain %v: with ExcludeAlso %d (%s), with the mask %d (%s)", i, v, explain, got, RejectionSummary(gc), want, RejectionSummary(wc))
				}
				for k := range gc {
					if gc[k].Host != wc[k].Host || gc[k].Rejected != wc[k].Rejected || gc[k].Reason != wc[k].Reason || gc[k].Total != wc[k].Total {
						t.Fatalf("case %d vm %d explain %v: record %d differs: %+v vs %+v", i, v, explain, k, gc[k], wc[k])
					}
				}
			}
			if got, _ := ch.Select(c, v, excl, false); got >= 0 && st.HostOf(v) < 0 && rng.IntN(2) == 0 {
				st.Add(v, got)
			}
		}
	}
	if also == 0 {
		t.Fatal("ExcludeAlso excluded no host: the test checks nothing")
	}
}
