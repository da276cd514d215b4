package placement

import (
	"cmp"
	"math"
	"slices"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// PABFDIndex is PABFD for many searches on one State whose excluded hosts only
// grow (CloudSim's consolidation: the overloaded hosts, then those being
// emptied). It finds the very host PABFD.Find finds with the same exclusions,
// without looking at every host.
//
// The rise of a running host's power is at least a floor (powerDeltaFloor):
// P(a + x) - P(u), a the share of CPU its scheduler hands out, x the VM's
// share, u its measured utilisation. Written as [P(a + x) - P(a)] + [P(a) -
// P(u)], the first part depends on the host only through a, so over hosts of one
// power curve and capacity whose a lies in a narrow bucket it is at least its
// least value over the bucket (computed per search, at the ends and the curve's
// breaks); the second part, the host's key, is at least the least key the group
// has seen. Buckets are looked at in order of that bound, and once it exceeds the
// best rise found the rest cannot win. The hosts in the buckets looked at are
// checked exactly as PABFD checks them; a tie goes to the lowest index as there.
// Empty hosts fare alike within a class (see hostClass), so only the first of
// each class not excluded is checked; hosts whose floor is unknown (no CPU
// capacity, a power curve that falls, no CPU to hand out) are checked always.
type PABFDIndex struct {
	st   *cluster.State
	det  policy.Detector
	info *hostInfo
	seen int // how much of st's change log is applied

	excl []bool
	kind []uint8 // per host: where it is indexed (kind* below)
	pos  []int32 // its position in its bucket or in always
	buck []int32 // its bucket (group*nBuckets + bucket)
	grp  []int32 // its group (-1: none)

	groups  []pgroup
	buckets [][]int32
	always  []int32
	empty   [][]int32 // per class, the empty hosts not excluded, by index
	// The classes with an empty host not excluded, and each one's place in it:
	// classes include the measured utilisation, so there are about as many as
	// running hosts, and a search must not pass over them all.
	emptyClasses []int32
	emptyPos     []int32

	order []bucketBound
	// plain: some host's power curve, utilisation or capacity is not a number,
	// where the order of the checks could matter; search as PABFD does.
	plain bool
}

const (
	kindNone uint8 = iota // excluded
	kindEmpty
	kindAlways
	kindBucket
)

// nBuckets splits 0..1 of a host's CPU handed out: finer buckets bound the rise
// more tightly and cost more per search; 64 keeps the per-search cost near a
// hundred power evaluations per group while each bucket spans well under the
// 0.1 between the curve's points.
const nBuckets = 64

type pgroup struct {
	c      float64
	p      model.PowerCurve
	keyMin float64
}

type bucketBound struct {
	lb float64
	b  int32
}

// NewPABFDIndex indexes st's hosts for det; excluded (nil: none) is copied.
func NewPABFDIndex(st *cluster.State, det policy.Detector, excluded []bool) *PABFDIndex {
	n := len(st.Snap.Hosts)
	info := infoOf(st)
	info.pabfd(st)
	ix := &PABFDIndex{st: st, det: det, info: info, seen: st.TrackChanges(),
		excl: make([]bool, n), kind: make([]uint8, n), pos: make([]int32, n), buck: make([]int32, n), grp: make([]int32, n),
		empty: make([][]int32, info.n), emptyPos: make([]int32, info.n)}
	if excluded != nil {
		copy(ix.excl, excluded)
	}
	type gk struct {
		c float64
		p model.PowerCurve
	}
	gs := map[gk]int32{}
	// A host's group follows from its class (hostClass holds capacity and
	// curve), so the map is asked once per class.
	byClass := make([]int32, info.n)
	for k := range byClass {
		byClass[k] = -2 // not yet known
	}
	for h := range st.Snap.Hosts {
		host := &st.Snap.Hosts[h]
		if math.IsNaN(info.powerNow[h]) {
			ix.plain = true
		}
		k := info.ids[h]
		if byClass[k] == -2 {
			byClass[k] = -1
			if math.IsNaN(host.Capacity.CPU) || slices.ContainsFunc(host.Power[:], math.IsNaN) {
				ix.plain = true
			}
			if host.Capacity.CPU > 0 && info.monotone[h] {
				key := gk{host.Capacity.CPU, host.Power}
				g, ok := gs[key]
				if !ok {
					g = int32(len(ix.groups))
					gs[key] = g
					ix.groups = append(ix.groups, pgroup{c: key.c, p: key.p, keyMin: math.Inf(1)})
				}
				byClass[k] = g
			}
		}
		ix.grp[h] = byClass[k]
	}
	ix.buckets = make([][]int32, len(ix.groups)*nBuckets)
	for h := range st.Snap.Hosts {
		ix.add(h)
	}
	return ix
}

// Exclude takes h out of every later search.
func (ix *PABFDIndex) Exclude(h int) {
	if ix.excl[h] {
		return
	}
	ix.sync()
	ix.remove(h)
	ix.excl[h] = true
}

// sync re-files the hosts whose VM lists changed since the last search.
func (ix *PABFDIndex) sync() {
	log := ix.st.Changes()
	for _, h := range log[ix.seen:] {
		ix.remove(int(h))
		ix.add(int(h))
	}
	ix.seen = len(log)
}

func (ix *PABFDIndex) add(h int) {
	st := ix.st
	if ix.excl[h] {
		ix.kind[h] = kindNone
		return
	}
	if len(st.VMs(h)) == 0 {
		k := ix.info.ids[h]
		l := ix.empty[k]
		i, _ := slices.BinarySearch(l, int32(h))
		ix.empty[k] = slices.Insert(l, i, int32(h))
		if len(l) == 0 {
			ix.emptyPos[k] = int32(len(ix.emptyClasses))
			ix.emptyClasses = append(ix.emptyClasses, k)
		}
		ix.kind[h] = kindEmpty
		return
	}
	g := ix.grp[h]
	avail := st.Available(h)
	if g >= 0 && avail > 0 {
		gr := &ix.groups[g]
		a := (gr.c - avail) / gr.c
		key := gr.p.Power(a) - ix.info.powerNow[h]
		if a >= 0 && a <= 1 && !math.IsNaN(key) {
			gr.keyMin = min(gr.keyMin, key)
			b := int32(g)*nBuckets + int32(min(int(a*nBuckets), nBuckets-1))
			ix.kind[h], ix.buck[h], ix.pos[h] = kindBucket, b, int32(len(ix.buckets[b]))
			ix.buckets[b] = append(ix.buckets[b], int32(h))
			return
		}
	}
	ix.kind[h], ix.pos[h] = kindAlways, int32(len(ix.always))
	ix.always = append(ix.always, int32(h))
}

func (ix *PABFDIndex) remove(h int) {
	switch ix.kind[h] {
	case kindEmpty:
		k := ix.info.ids[h]
		if i, ok := slices.BinarySearch(ix.empty[k], int32(h)); ok {
			ix.empty[k] = slices.Delete(ix.empty[k], i, i+1)
			if len(ix.empty[k]) == 0 {
				ix.emptyClasses = swapRemove(ix.emptyClasses, ix.emptyPos, int(k))
			}
		}
	case kindAlways:
		ix.always = swapRemove(ix.always, ix.pos, h)
	case kindBucket:
		b := ix.buck[h]
		ix.buckets[b] = swapRemove(ix.buckets[b], ix.pos, h)
	}
	ix.kind[h] = kindNone
}

func swapRemove(l []int32, pos []int32, h int) []int32 {
	i := pos[h]
	last := l[len(l)-1]
	l[i], pos[last] = last, i
	return l[:len(l)-1]
}

// Find returns the host PABFD.Find(st, v, excluded) returns, excluded being the
// hosts given to NewPABFDIndex and Exclude.
func (ix *PABFDIndex) Find(v int) int {
	if ix.plain {
		return PABFD{Detector: ix.det}.Find(ix.st, v, ix.excl)
	}
	ix.sync()
	st, info := ix.st, ix.info
	need := st.Need(v)
	best, bestDelta := -1, math.MaxFloat64
	// try checks h as PABFD does, in any order: the smallest rise wins, a tie
	// the lowest index.
	try := func(h int) {
		if bestDelta < math.MaxFloat64 {
			if f := info.floor(st, need.CPU, h); f > bestDelta || f == bestDelta && h > best {
				return
			}
		}
		if _, ok := st.NoRoomFor(v, h, need); !ok {
			return
		}
		d := info.delta(st, need.CPU, h)
		if d > bestDelta || d == bestDelta && h > best {
			return
		}
		if st.InUse(h) != 0 && ix.det.Overloaded(st, h, v) {
			return
		}
		best, bestDelta = h, d
	}
	for _, k := range ix.emptyClasses {
		try(int(ix.empty[k][0]))
	}
	for _, h := range ix.always {
		try(int(h))
	}
	ix.order = ix.order[:0]
	for g := range ix.groups {
		gr := &ix.groups[g]
		x := need.CPU / gr.c
		base := int32(g) * nBuckets
		for b := range int32(nBuckets) {
			if len(ix.buckets[base+b]) == 0 {
				continue
			}
			lb := riseFloor(&gr.p, x, float64(b)/nBuckets, float64(b+1)/nBuckets) + gr.keyMin
			ix.order = append(ix.order, bucketBound{lb, base + b})
		}
	}
	slices.SortFunc(ix.order, func(a, b bucketBound) int { return cmp.Compare(a.lb, b.lb) })
	for _, o := range ix.order {
		if o.lb > bestDelta {
			break // every host left has a floor above the best
		}
		for _, h := range ix.buckets[o.b] {
			try(int(h))
		}
	}
	return best
}

// riseFloor is at most powerDeltaFloor's P(a + x - slack) - P(a) - slack(1 +
// p[10]) for any a in [lo, hi], on a nondecreasing curve p: that difference is
// piecewise linear in a, so its least value is at an end or at a break (a or
// a + x - slack on one of the curve's points). The margin covers rounding, and
// -Inf is returned if anything is not a number.
func riseFloor(p *model.PowerCurve, x, lo, hi float64) float64 {
	const slack = 1e-9
	y := x - slack
	f := func(a float64) float64 { return p.Power(a+y) - p.Power(a) }
	m := min(f(lo), f(hi))
	for k := 0; k <= 10; k++ {
		if a := float64(k) / 10; a > lo && a < hi {
			m = min(m, f(a))
		}
		if a := float64(k)/10 - y; a > lo && a < hi {
			m = min(m, f(a))
		}
	}
	m -= slack*(1+p[10]) + 1e-9*(1+math.Abs(p[10])+math.Abs(p[0]))
	if math.IsNaN(m) {
		return math.Inf(-1)
	}
	return m
}
