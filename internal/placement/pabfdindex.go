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
// The rise of a running host's power is P(a + x) - P(u), a the share of its CPU
// in use (cluster.State.InUse, kept per host), x the VM's share, u its measured
// utilisation. Written as [P(a + x) - P(a)] + [P(a) - P(u)], the first part
// depends on the host only through a, so over hosts of one power curve and
// capacity whose a lies in a narrow bucket it is at least its least value over
// the bucket (computed per search, at the ends and the curve's breaks); the
// second part, the host's key, is kept beside it in the bucket, which is kept
// in order of key, so its first key bounds them all. Buckets are looked at in
// order of that bound, and once it exceeds the best rise found the rest cannot
// win; within a bucket the hosts are looked at in order of their own bound (the
// bucket's first part plus the key) until it exceeds the best rise. The hosts
// looked at are checked exactly as PABFD checks them; a tie goes to the lowest
// index as there.
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
	buckets [][]bentry // each by key, then host index
	hkey    []float64  // per host in a bucket: its key there
	always  []int32
	empty   [][]int32 // per class, the empty hosts not excluded, by index
	// The classes with an empty host not excluded, and each one's place in it:
	// classes include the measured utilisation, so there are about as many as
	// running hosts, and a search must not pass over them all.
	emptyClasses []int32
	emptyPos     []int32

	order []bucketBound
	// lr is det when it is CloudSim's LR: a host it is sure to call
	// overloaded with the VM (policy.LR.HostFloor) is then passed over unread.
	lr *policy.LR
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
	c float64
	p model.PowerCurve
}

type bucketBound struct {
	lb, rf float64 // the bucket's bound, and its first part
	cv     float64 // the group's VMFloor for this search
	b      int32
}

// bentry is a host in a bucket with its key, P(a) - P(u), and its LR floor
// (policy.LR.HostFloor; -Inf when there is none or the host uses no CPU).
type bentry struct {
	key, lo float64
	// The host's CPU in use and power at its measured utilisation, read here
	// for its rise instead of from the host arrays (hostInfo.delta's values).
	inUse, pnow float64
	h           int32
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
	if lr, ok := det.(policy.LR); ok {
		ix.lr = &lr
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
					ix.groups = append(ix.groups, pgroup{c: key.c, p: key.p})
				}
				byClass[k] = g
			}
		}
		ix.grp[h] = byClass[k]
	}
	ix.buckets = make([][]bentry, len(ix.groups)*nBuckets)
	ix.hkey = make([]float64, n)
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
	if g := ix.grp[h]; g >= 0 {
		gr := &ix.groups[g]
		a := st.InUse(h) / gr.c
		key := gr.p.Power(a) - ix.info.powerNow[h]
		if a >= 0 && a <= 1 && !math.IsNaN(key) {
			b := int32(g)*nBuckets + int32(min(int(a*nBuckets), nBuckets-1))
			e := bentry{key: key, lo: math.Inf(-1), inUse: st.InUse(h), pnow: ix.info.powerNow[h], h: int32(h)}
			if ix.lr != nil && st.InUse(h) != 0 {
				e.lo = ix.lr.HostFloor(st, h)
			}
			i, _ := slices.BinarySearchFunc(ix.buckets[b], e, cmpEntry)
			ix.buckets[b] = slices.Insert(ix.buckets[b], i, e)
			ix.kind[h], ix.buck[h], ix.hkey[h] = kindBucket, b, key
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
			ix.empty[k] = deleteAt(ix.empty[k], i)
			if len(ix.empty[k]) == 0 {
				ix.emptyClasses = swapRemove(ix.emptyClasses, ix.emptyPos, int(k))
			}
		}
	case kindAlways:
		ix.always = swapRemove(ix.always, ix.pos, h)
	case kindBucket:
		b := ix.buck[h]
		if i, ok := slices.BinarySearchFunc(ix.buckets[b], bentry{key: ix.hkey[h], h: int32(h)}, cmpEntry); ok {
			ix.buckets[b] = slices.Delete(ix.buckets[b], i, i+1)
		}
	}
	ix.kind[h] = kindNone
}

// cmpEntry orders a bucket: by key, then by host index. Keys are numbers
// (a host whose key is not one is not in a bucket).
func cmpEntry(a, b bentry) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.h, b.h)
}

// deleteAt is slices.Delete(l, i, i+1), moving the shorter side: CloudSim's
// consolidation excludes the idle hosts in index order, each the first of its
// class's list, and moving the rest every time was quadratic in them.
func deleteAt(l []int32, i int) []int32 {
	if i < len(l)/2 {
		copy(l[1:i+1], l[:i])
		return l[1:]
	}
	return slices.Delete(l, i, i+1)
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
	// rest is try for a host whose rise d is known.
	rest := func(h int, d float64) {
		if d > bestDelta || d == bestDelta && h > best {
			return
		}
		if _, ok := st.NoRoomFor(v, h, need); !ok {
			return
		}
		if st.InUse(h) != 0 && ix.det.Overloaded(st, h, v) {
			return
		}
		best, bestDelta = h, d
	}
	try := func(h int) { rest(h, info.delta(st, need.CPU, h)) }
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
		cv := math.Inf(-1)
		if ix.lr != nil {
			cv = ix.lr.VMFloor(st, v, gr.c)
		}
		base := int32(g) * nBuckets
		for b := range int32(nBuckets) {
			if len(ix.buckets[base+b]) == 0 {
				continue
			}
			rf := riseFloor(&gr.p, x, float64(b)/nBuckets, float64(b+1)/nBuckets)
			ix.order = append(ix.order, bucketBound{rf + ix.buckets[base+b][0].key, rf, cv, base + b})
		}
	}
	// Buckets by least bound first, through a heap: a search mostly stops
	// after a few of them.
	heapInit(ix.order)
	for q := ix.order; len(q) > 0; {
		o := q[0]
		q = heapPop(q)
		if o.lb > bestDelta {
			break // every host left has a bound above the best
		}
		for _, e := range ix.buckets[o.b] {
			// At most the host's rise (see riseFloor): above the best, it
			// cannot win, nor can the hosts after it in the bucket.
			if o.rf+e.key > bestDelta {
				break
			}
			if ix.lr != nil && (e.lo+o.cv)*ix.lr.S >= 1+1e-9 {
				continue // LR is sure to call it overloaded with v
			}
			// hostInfo.delta on the entry's copies: a host of group g has
			// the group's capacity (> 0) and curve.
			gr := &ix.groups[o.b/nBuckets]
			d := math.Inf(1)
			if after := (e.inUse + need.CPU) / gr.c; !(after > 1) {
				d = gr.p.Power(after) - e.pnow
			}
			rest(int(e.h), d)
		}
	}
	return best
}

// riseFloor is at most P(a + x - slack) - P(a) - slack(1 + p[10]) for any a in
// [lo, hi], on a nondecreasing curve p, and so at most P((I + X)/c) - P(I/c)
// for a host with I/c in [lo, hi] and a VM with X/c = x (the slack is far
// above the rounding of those quotients): that difference is
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

// heapInit orders q as a binary min-heap by lb.
func heapInit(q []bucketBound) {
	for i := len(q)/2 - 1; i >= 0; i-- {
		siftDown(q, i)
	}
}

// heapPop drops the least of heap q and returns the heap left.
func heapPop(q []bucketBound) []bucketBound {
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	siftDown(q, 0)
	return q
}

func siftDown(q []bucketBound, i int) {
	for {
		c := 2*i + 1
		if c >= len(q) {
			return
		}
		if c+1 < len(q) && q[c+1].lb < q[c].lb {
			c++
		}
		if !(q[c].lb < q[i].lb) {
			return
		}
		q[i], q[c] = q[c], q[i]
		i = c
	}
}
