package placement

import (
	"slices"
	"sync"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// A host with no VMs in the what-if has every sum a step reads at exactly 0
// (cluster.State rebuilds a host's sums when it empties), so how it fares for a VM
// depends only on these fields. Empty hosts of one class score alike, and a tie
// goes to the lowest index, so a selection needs to look at only the first empty
// host of each class that is not excluded. That keeps the choice the same as a
// scan of every host, and makes a fleet of mostly idle hosts cheap to search:
// 100 times the hosts cost a cheap pass over them, not 100 times the scoring.
type hostClass struct {
	capacity model.Resources
	pes      int
	peMIPS   float64
	power    model.PowerCurve
	util     float64
}

// classCache keeps the classes of the last few States' hosts: the initial
// placement asks once per VM with a fresh Context on one State, and a decision
// cycle uses a few Contexts on one State. It holds the States it indexes, so a
// cached pointer cannot be reused by a new State. A State's snapshot must not
// change while the State is in use (its sums assume so already).
var classCache struct {
	sync.Mutex
	st   [4]*cluster.State
	info [4]*hostInfo
	next int
}

// hostInfo is what a search reads of a State's hosts that stays as long as the
// snapshot: the class of each (0..n-1), and for PABFD its power at the measured
// utilisation and whether its power curve never falls.
type hostInfo struct {
	ids       []int32
	n         int
	powerNow  []float64
	monotone  []bool
	prepPABFD sync.Once
	fv        *fleetView // the chain's view of running and empty hosts (view)
}

func infoOf(st *cluster.State) *hostInfo {
	classCache.Lock()
	defer classCache.Unlock()
	for i, s := range classCache.st {
		if s == st && len(classCache.info[i].ids) == len(st.Snap.Hosts) {
			return classCache.info[i]
		}
	}
	ids, n := classIDs(st.Snap.Hosts)
	x := &hostInfo{ids: ids, n: n}
	i := classCache.next
	classCache.next = (i + 1) % len(classCache.st)
	classCache.st[i], classCache.info[i] = st, x
	return x
}

// classIDs numbers hosts by hostClass, in order of first appearance. A fleet has
// few host types, so a host's type (every field but the utilisation) is found
// among the types seen so far by comparing fields, and only (type, utilisation)
// is hashed: hashing the whole class hashed 18 floats per host per State. Types
// and keys compare with ==, as map keys do (a NaN field makes a class of its own
// either way), so the classes and their numbers are classIDsPlain's.
func classIDs(hs []model.Host) ([]int32, int) {
	type hostType struct {
		capacity model.Resources
		pes      int
		peMIPS   float64
		power    model.PowerCurve
	}
	type key struct {
		t    int32
		util float64
	}
	ids := make([]int32, len(hs))
	var types []hostType
	typeIx := map[hostType]int32{} // once there are many types
	seen := map[key]int32{}
	for h := range hs {
		x := hostType{hs[h].Capacity, hs[h].PEs, hs[h].PEMIPS, hs[h].Power}
		t := int32(-1)
		if len(types) <= 16 {
			for i := range types {
				if types[i] == x {
					t = int32(i)
					break
				}
			}
		} else if i, ok := typeIx[x]; ok {
			t = i
		}
		if t < 0 {
			t = int32(len(types))
			types = append(types, x)
			if len(types) > 16 {
				if len(types) == 17 {
					for i := range types {
						if _, ok := typeIx[types[i]]; !ok {
							typeIx[types[i]] = int32(i)
						}
					}
				} else {
					typeIx[x] = t
				}
			}
		}
		k := key{t, hs[h].Util}
		id, ok := seen[k]
		if !ok {
			id = int32(len(seen))
			seen[k] = id
		}
		ids[h] = id
	}
	return ids, len(seen)
}

// pabfd fills powerNow and monotone once (the chain's searches need neither).
func (x *hostInfo) pabfd(st *cluster.State) {
	x.prepPABFD.Do(func() {
		hs := st.Snap.Hosts
		x.powerNow, x.monotone = make([]float64, len(hs)), make([]bool, len(hs))
		for h := range hs {
			p := &hs[h].Power
			x.powerNow[h] = p.Power(min(hs[h].Util, 1))
			x.monotone[h] = true
			for i := 1; i < len(p); i++ {
				if p[i] < p[i-1] {
					x.monotone[h] = false
				}
			}
		}
	})
}

// emptySeen tracks, within one selection, which classes of empty host have been
// looked at and which filter (-1: none) rejected their first host.
type emptySeen struct {
	stamp    int32
	seen     []int32
	rejected []int
}

func (e *emptySeen) reset(n int) {
	if len(e.seen) < n {
		e.seen, e.rejected = make([]int32, n), make([]int, n)
		e.stamp = 0
	}
	e.stamp++
}

// first reports whether class k is met for the first time in this selection.
func (e *emptySeen) first(k int32) bool {
	if e.seen[k] == e.stamp {
		return false
	}
	e.seen[k], e.rejected[k] = e.stamp, -1
	return true
}

// fleetView lists a State's hosts as a selection reads them: the hosts running
// VMs in index order, and the empty hosts of each class in index order. It is
// kept in step with the State through its log of changed hosts
// (cluster.State.TrackChanges), so that a selection visits each running host
// and only the first empty host of each class that is not excluded, instead of
// every host of the fleet. A selection with a rejected class counts that
// class's other empty hosts as the scan of every host counts them.
type fleetView struct {
	pos     int     // changes consumed
	isRun   []bool  // host has VMs, as of the last sync
	running []int32 // hosts with VMs, ascending
	empties [][]int32
	active  []int32   // classes with an empty host, in no order
	at      []int32   // each class's place in active, -1 none
	rec     []hostRec // per host, by index (compact.go)
}

// view is st's fleetView, brought up to date.
func (x *hostInfo) view(st *cluster.State) *fleetView {
	f := x.fv
	if f == nil {
		n := len(st.Snap.Hosts)
		f = &fleetView{pos: st.TrackChanges(), isRun: make([]bool, n), empties: make([][]int32, x.n), at: make([]int32, x.n),
			rec: make([]hostRec, n)}
		for k := range f.at {
			f.at[k] = -1
		}
		for h := range n {
			f.refresh(st, h)
			if len(st.VMs(h)) > 0 {
				f.isRun[h] = true
				f.running = append(f.running, int32(h))
			} else {
				f.addEmpty(x.ids[h], int32(h))
			}
		}
		x.fv = f
		return f
	}
	log := st.Changes()
	for _, h := range log[f.pos:] {
		f.refresh(st, int(h))
		run := len(st.VMs(int(h))) > 0
		if run == f.isRun[h] {
			continue
		}
		f.isRun[h] = run
		k := x.ids[h]
		if run {
			f.running = insertSorted(f.running, h)
			f.dropEmpty(k, h)
		} else {
			f.running = deleteSorted(f.running, h)
			f.addEmpty(k, h)
		}
	}
	f.pos = len(log)
	return f
}

func (f *fleetView) addEmpty(k, h int32) {
	if len(f.empties[k]) == 0 {
		f.at[k] = int32(len(f.active))
		f.active = append(f.active, k)
	}
	f.empties[k] = insertSorted(f.empties[k], h)
}

func (f *fleetView) dropEmpty(k, h int32) {
	f.empties[k] = deleteSorted(f.empties[k], h)
	if len(f.empties[k]) == 0 {
		i, last := f.at[k], f.active[len(f.active)-1]
		f.active[i], f.at[last] = last, i
		f.active = f.active[:len(f.active)-1]
		f.at[k] = -1
	}
}

func insertSorted(l []int32, h int32) []int32 {
	i, found := slices.BinarySearch(l, h)
	if found {
		return l
	}
	return slices.Insert(l, i, h)
}

func deleteSorted(l []int32, h int32) []int32 {
	if i, found := slices.BinarySearch(l, h); found {
		return slices.Delete(l, i, i+1)
	}
	return l
}
