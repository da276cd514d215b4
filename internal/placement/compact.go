package placement

import (
	"math"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// hostRec is what a selection through the fleetView reads of a host before
// its full check, copied into one place: the values NoRoomFor, quickReject and
// scoreBound read, with the Summary of each resource. A selection visits
// every running host it does not exclude; read from the State, that was about
// ten cache lines per host (the Host record, alloc, other, the VM list, the
// incoming count, a Summary line per resource); here it is three, side by
// side in index order. Each field is a copy of the value the State gives, so
// the same comparisons on it give the same answers. The room fields are
// refreshed whenever the State's log of changes lists the host (its VM list
// changed, so did its sums); the summaries are then marked stale and copied
// from State.Summary when next read, as the State itself works them out only
// when asked.
type hostRec struct {
	avail, peMIPS float64 // State.Available(h), the host's PEMIPS
	cap           model.Resources
	oMem, oNet    float64 // State.OtherNeed(h)
	oDisk         float64
	nVMs, in      int32     // len(State.VMs(h)), State.Incoming(h)
	sum           [4]sumRec // by resource
}

// sumRec is a copy of a HostSummary, 48 bytes. Its MaxMu is its WorstMu (the
// largest mean is the mean at the step where the mean is largest), so it is
// kept once; TestCompactRecordsFollowTheState checks that they are equal.
type sumRec struct {
	mu0, peak         float64
	worstMu, worstVar float64
	maxVar            float64
	worstStep         int32
	ok                bool
}

func (f *fleetView) refresh(st *cluster.State, h int) {
	hs := &st.Snap.Hosts[h]
	o := st.OtherNeed(h)
	f.rec[h] = hostRec{avail: st.Available(h), peMIPS: hs.PEMIPS, cap: hs.Capacity,
		oMem: o.Mem, oNet: o.Net, oDisk: o.Disk,
		nVMs: int32(len(st.VMs(h))), in: int32(st.Incoming(h))}
}

// summary is h's Summary of r as the record keeps it.
func (f *fleetView) summary(st *cluster.State, rec *hostRec, r model.Resource, h int) *sumRec {
	s := &rec.sum[r]
	if !s.ok {
		x := st.Summary(r, h)
		*s = sumRec{mu0: x.Mu0, peak: x.Peak, worstMu: x.WorstMu, worstVar: x.WorstVar,
			maxVar: x.MaxVar, worstStep: int32(x.WorstStep), ok: true}
	}
	return s
}

// noRoom is State.NoRoomFor(v, h, need) on the record: false where it reports
// no room. share is need.CPU / max(v's vCPUs, 1).
func (rec *hostRec) roomFor(need model.Resources, share float64) bool {
	if rec.peMIPS > 0 && share > rec.peMIPS {
		return false
	}
	if rec.cap.CPU > 0 && rec.avail < need.CPU {
		return false
	}
	if c := rec.cap.Mem; c > 0 && rec.oMem+need.Mem > c {
		return false
	}
	if c := rec.cap.Net; c > 0 && rec.oNet+need.Net > c {
		return false
	}
	if c := rec.cap.Disk; c > 0 && rec.oDisk+need.Disk > c {
		return false
	}
	return true
}

// quickRejectRec is quickReject on the record.
func (c *Context) quickRejectRec(f *fleetView, rec *hostRec, h int) bool {
	last := c.lastStep()
	for _, r := range c.Resources {
		cp := rec.cap.Get(r)
		if cp <= 0 {
			continue
		}
		x := f.summary(c.St, rec, r, h)
		if c.Peaks && x.mu0+c.vmMu[r][0]+max(c.vmPeak[r], x.peak) > cp {
			c.rejectedOn = r
			return true
		}
		if s := int(x.worstStep); s <= last {
			mu, variance := x.worstMu+c.vmMu[r][s], x.worstVar+c.vmVar[r][s]
			if mu+c.Z*math.Sqrt(variance) > c.Limits.Get(r)*cp {
				c.rejectedOn = r
				return true
			}
		}
	}
	return false
}

// cannotWinRec is cannotWin on the record.
func (ch *Chain) cannotWinRec(c *Context, f *fleetView, rec *hostRec, v, h int, best, wsum float64) bool {
	ub, ok := ch.scoreBoundRec(c, f, rec, v, h, wsum)
	return ok && ub+pruneSlack < best
}

// scoreBoundRec is scoreBound on the record, kept as a copy: folding the two
// behind shared helpers measured 6 % more CPU at --scale 100, where this is the
// hot loop. TestCompactRecordsFollowTheState holds their answers equal.
func (ch *Chain) scoreBoundRec(c *Context, f *fleetView, rec *hostRec, v, h int, wsum float64) (float64, bool) {
	lo := 1.0
	for _, r := range c.Resources {
		cp := rec.cap.Get(r)
		if cp <= 0 {
			continue
		}
		x := f.summary(c.St, rec, r, h)
		mu := x.worstMu + c.vmMaxMu[r] // MaxMu
		zsd := c.Z * math.Sqrt(x.maxVar+c.vmMaxVar[r])
		b, limit := mu+zsd, c.Limits.Get(r)*cp
		if !(b+pruneSlack*(math.Abs(b)+math.Abs(limit)) <= limit) {
			return 0, false
		}
		l := (cp - mu - zsd) / cp
		if !(l >= -1e300) {
			return 0, false
		}
		lo = min(lo, l-pruneSlack)
	}
	lo = max(lo, 0)
	empty := rec.nVMs == 0
	rest, k := 0.0, 0.0
	for _, s := range ch.Scorers {
		switch s.Scorer.(type) {
		case headroomScorer:
			k += s.Weight
		case packingScorer:
			if !empty {
				rest += s.Weight
				k -= 0.5 * s.Weight
			}
		case affinityScorer:
			rest += s.Weight * 0.5
		case migrationCostScorer:
			rest += s.Weight / float64(1+int(rec.in))
		default:
			rest += s.Weight * s.Score(c, v, h)
		}
	}
	x := 1.0
	if k < 0 {
		x = lo
	}
	ub := rest + k*x
	if wsum > 0 {
		ub /= wsum
	}
	return ub, true
}

// MemNow is h's memory capacity, its memory need now (State.Summary(Mem,
// h).Mu0) and how many VMs it runs, for a rule a selection asks through
// ExcludeAlso (core's memory-peaks clause). Within a selection through the
// fleetView they are read from h's compact record, which the selection has
// just read; elsewhere from the State. The values are the same either way.
// mu0 is worked out only for a host that has VMs and memory capacity > 0.
func (c *Context) MemNow(h int) (cp, mu0 float64, nVMs int) {
	st := c.St
	if c.info == nil || c.info.fv == nil {
		cp, nVMs = st.Snap.Hosts[h].Capacity.Mem, len(st.VMs(h))
		if cp > 0 && nVMs > 0 {
			mu0 = st.Summary(model.Mem, h).Mu0
		}
		return cp, mu0, nVMs
	}
	fv := c.info.view(st)
	rec := &fv.rec[h]
	cp, nVMs = rec.cap.Mem, int(rec.nVMs)
	if cp > 0 && nVMs > 0 {
		mu0 = fv.summary(st, rec, model.Mem, h).mu0
	}
	return cp, mu0, nVMs
}
