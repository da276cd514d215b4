package placement

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// same reports whether a and b are the same float64, NaN included.
func same(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// TestCompactRecordsFollowTheState: under random adds, removes and moves, after
// every selection through the view, every host's compact record holds the
// values recomputed from the State (room fields and every summary it has
// filled), MaxMu is WorstMu, and the checks made on the record (roomFor,
// quickRejectRec, scoreBoundRec) answer as NoRoomFor, quickReject and
// scoreBound on every host.
func TestCompactRecordsFollowTheState(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 3))
	_, names := StepNames()
	checked := 0
	for i := range 400 {
		st, ch, excl, c := randomSelection(t, rng, names)
		n := len(st.Snap.Hosts)
		wsum := 0.0
		for _, s := range ch.Scorers {
			wsum += s.Weight
		}
		for round := range 3 * len(st.Snap.VMs) {
			v := rng.IntN(len(st.Snap.VMs))
			ch.Select(c, v, excl, false)
			if c.info != nil && c.info.fv != nil {
				fv := c.info.view(st)
				c.prepare(v)
				ch.prunable(c, v, false)
				share := c.vmNeed.CPU / float64(max(st.Snap.VMs[v].VCPU, 1))
				for h := range n {
					rec := &fv.rec[h]
					hs := &st.Snap.Hosts[h]
					o := st.OtherNeed(h)
					if !same(rec.avail, st.Available(h)) || !same(rec.peMIPS, hs.PEMIPS) || rec.cap != hs.Capacity && !math.IsNaN(hs.Capacity.CPU+hs.Capacity.Mem+hs.Capacity.Net+hs.Capacity.Disk) ||
						!same(rec.oMem, o.Mem) || !same(rec.oNet, o.Net) || !same(rec.oDisk, o.Disk) ||
						int(rec.nVMs) != len(st.VMs(h)) || int(rec.in) != st.Incoming(h) {
						t.Fatalf("case %d round %d host %d: record %+v, State avail %v other %v vms %d in %d", i, round, h, *rec, st.Available(h), o, len(st.VMs(h)), st.Incoming(h))
					}
					for r := range model.Resource(4) {
						s := rec.sum[r]
						if !s.ok {
							continue
						}
						x := st.Summary(r, h)
						if !same(s.mu0, x.Mu0) || !same(s.peak, x.Peak) || !same(s.worstMu, x.WorstMu) || !same(s.worstVar, x.WorstVar) ||
							!same(s.maxVar, x.MaxVar) || int(s.worstStep) != x.WorstStep || !same(x.MaxMu, x.WorstMu) {
							t.Fatalf("case %d round %d host %d %v: record %+v, Summary %+v", i, round, h, r, s, *x)
						}
						checked++
					}
					_, ok := st.NoRoomFor(v, h, c.vmNeed)
					if rec.roomFor(c.vmNeed, share) != ok {
						t.Fatalf("case %d round %d host %d: roomFor %v, NoRoomFor %v", i, round, h, !ok, ok)
					}
					if !ok {
						continue
					}
					if a, b := c.quickRejectRec(fv, rec, h), c.quickReject(v, h); a != b {
						t.Fatalf("case %d round %d host %d: quickRejectRec %v, quickReject %v", i, round, h, a, b)
					}
					ua, oa := ch.scoreBoundRec(c, fv, rec, v, h, wsum)
					ub, ob := ch.scoreBound(c, v, h, wsum)
					if oa != ob || !same(ua, ub) {
						t.Fatalf("case %d round %d host %d: scoreBoundRec %v %v, scoreBound %v %v", i, round, h, ua, oa, ub, ob)
					}
				}
			}
			h := st.HostOf(v)
			switch {
			case h >= 0 && rng.IntN(3) == 0:
				st.Remove(v, h)
			case h >= 0:
				st.Remove(v, h)
				st.Add(v, rng.IntN(n))
			default:
				st.Add(v, rng.IntN(n))
			}
		}
	}
	if checked == 0 {
		t.Fatal("no summary was checked")
	}
}
