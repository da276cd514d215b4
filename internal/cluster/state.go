// Package cluster is the decision core's scratch view of a snapshot: VM lists per
// host that the core may change hypothetically while it plans, with the sums that
// detectors and placement steps ask for kept current. It never touches the snapshot.
package cluster

import (
	"math"

	"github.com/headroom/headroom/internal/model"
)

// MigratingInShare is the share of a migrating-in VM's CPU that its target host
// allocates while the copy runs (CloudSim's model: the VM still runs on the source).
const MigratingInShare = 0.1

// State is a mutable what-if copy of a snapshot's placement.
type State struct {
	Snap *model.Snapshot
	// Forecasts is indexed like Snap.VMs; nil when the policy needs none.
	Forecasts []model.ResourceForecast

	on     [][]int   // VM lists per host, in placement order
	where  []int     // VM -> host in this what-if (-1 none)
	req    []float64 // sum of requested CPU per host (migrating-in VMs in full)
	alloc  []float64 // sum of CPU asked of the host's scheduler (capped, migrating-in at 10 %)
	other  []model.Resources
	hist   [][]float64 // cached host utilisation history; nil when stale
	maxLen int
	buf    []float64
	mom    [4][][]float64 // cached forecast moments per resource and host; nil entries are stale
	steps  int
	in     []int // VMs coming in, per host
	// peak[r][h] is the largest PeakExcess of r among h's VMs, valid while
	// peakOK[r][h]; kept like the moments, until h's VM list changes.
	peak   [4][]float64
	peakOK [4][]bool
	sum    [4][]HostSummary // per resource and host; entries with !ok are stale
	// Per VM, side by side: its own migration estimate and its memory size,
	// which MigrationSeconds reads for every VM of a host on every detector run
	// of CloudSim's best fit; reading them from the VM records missed the cache.
	vmMigSecs, vmMem []float64
	// Aux is a slot for an index a caller keeps beside this State (core's
	// CloudSim placement keeps its PABFD index there); it lives as long as the
	// State does.
	Aux any
	// changes lists the hosts whose VM lists changed, in order, once tracking.
	changes  []int32
	tracking bool
	// inUse[h] is InUse(h), valid while inUseOK[h]; kept until h's VM list changes.
	inUse   []float64
	inUseOK []bool
	zConf   float64
	z       float64
	lr      *lrCache // see lrcache.go
}

// New builds a State from a snapshot. The snapshot is not modified.
func New(s *model.Snapshot, forecasts []model.ResourceForecast) *State {
	st := &State{
		Snap:      s,
		Forecasts: forecasts,
		on:        make([][]int, len(s.Hosts)),
		where:     make([]int, len(s.VMs)),
		req:       make([]float64, len(s.Hosts)),
		alloc:     make([]float64, len(s.Hosts)),
		other:     make([]model.Resources, len(s.Hosts)),
		hist:      make([][]float64, len(s.Hosts)),
		in:        make([]int, len(s.Hosts)),
	}
	st.steps = countSteps(st)
	st.vmMigSecs, st.vmMem = make([]float64, len(s.VMs)), make([]float64, len(s.VMs))
	for i := range st.where {
		st.vmMigSecs[i], st.vmMem[i] = s.VMs[i].MigrationSeconds, s.VMs[i].Size.Mem
		st.where[i] = -1
		if n := len(s.VMs[i].History); n > st.maxLen {
			st.maxLen = n
		}
	}
	for h := range s.Hosts {
		st.on[h] = append(make([]int, 0, len(s.Hosts[h].VMs)+4), s.Hosts[h].VMs...)
		for _, v := range s.Hosts[h].VMs {
			if s.VMs[v].Host == h {
				st.where[v] = h
			}
		}
		st.recompute(h)
	}
	return st
}

// Incoming is how many VMs are coming to h: migrating in now or placed there in this
// what-if.
func (st *State) Incoming(h int) int { return st.in[h] }

// VMs returns the VMs on host h in this what-if, in placement order. Do not modify.
func (st *State) VMs(h int) []int { return st.on[h] }

// HostOf returns the host VM v is on in this what-if.
func (st *State) HostOf(v int) int { return st.where[v] }

func (st *State) migratingIn(v, h int) bool {
	vm := &st.Snap.VMs[v]
	return vm.Host != h && vm.Migrating()
}

// Need is what v asks of a host: its demand, but at least what is reserved for it.
func (st *State) Need(v int) model.Resources {
	vm := &st.Snap.VMs[v]
	d, r := vm.Demand, vm.Reserved
	return model.Resources{CPU: max(d.CPU, r.CPU), Mem: max(d.Mem, r.Mem), Net: max(d.Net, r.Net), Disk: max(d.Disk, r.Disk)}
}

// capped is the CPU a host can give v: each vCPU gets at most one PE.
func (st *State) capped(v, h int) float64 {
	vm := &st.Snap.VMs[v]
	host := &st.Snap.Hosts[h]
	d := max(vm.Demand.CPU, vm.Reserved.CPU)
	if host.PEMIPS > 0 {
		n := float64(max(vm.VCPU, 1))
		if d/n > host.PEMIPS {
			d = host.PEMIPS * n
		}
	}
	return d
}

func (st *State) recompute(h int) {
	st.req[h], st.alloc[h], st.other[h], st.in[h] = 0, 0, model.Resources{}, 0
	for _, v := range st.on[h] {
		st.account(v, h, 1)
	}
	st.stale(h)
}

func (st *State) account(v, h int, sign float64) {
	vm := &st.Snap.VMs[v]
	st.req[h] += sign * vm.Demand.CPU
	a := st.capped(v, h)
	if st.migratingIn(v, h) {
		a *= MigratingInShare
	}
	if st.Snap.VMs[v].Host != h {
		st.in[h] += int(sign)
	}
	st.alloc[h] += sign * a
	o := st.Need(v)
	o.CPU = 0
	st.other[h] = st.other[h].Add(o.Scale(sign))
}

// Add puts v on h (appended, as a new placement is).
func (st *State) Add(v, h int) {
	st.on[h] = append(st.on[h], v)
	st.where[v] = h
	st.account(v, h, 1)
	st.stale(h)
}

func (st *State) stale(h int) {
	if st.tracking {
		st.changes = append(st.changes, int32(h))
	}
	st.hist[h] = nil
	st.lrStale(h)
	if st.inUseOK != nil {
		st.inUseOK[h] = false
	}
	for r := range st.mom {
		if st.mom[r] != nil {
			st.mom[r][h] = nil
		}
		if st.peakOK[r] != nil {
			st.peakOK[r][h] = false
		}
		if st.sum[r] != nil {
			st.sum[r][h].ok = false
		}
	}
}

// TrackChanges starts listing, for Changes, the hosts whose VM lists change,
// and returns how long the list is now: an index kept beside the State re-files
// the hosts listed after that.
func (st *State) TrackChanges() int {
	st.tracking = true
	return len(st.changes)
}

// Changes is the list TrackChanges started: every host whose VM list changed
// since, in order, once per change. Do not modify.
func (st *State) Changes() []int32 { return st.changes }

// HostSummary is what a placement check reads of a host's cached sums of one
// resource most often, side by side in one place: the mean at step 0 (need now),
// the largest PeakExcess among its VMs, and the moments at the step whose mean is
// largest (the earliest such step). Each value is the one HostMoments and
// HostPeakExcess give, so a check made on it gives what the same check made on
// those gives.
type HostSummary struct {
	Mu0, Peak float64
	WorstStep int
	WorstMu   float64
	WorstVar  float64
	// MaxMu and MaxVar are the largest mean and the largest variance over all
	// steps (not necessarily at one step): with the VM's own largest ones they
	// bound every step's bound from above, and so its room from below.
	MaxMu, MaxVar float64
	ok            bool
}

// Summary is h's HostSummary of r, kept until h's VM list changes.
func (st *State) Summary(r model.Resource, h int) *HostSummary {
	if st.sum[r] == nil {
		st.sum[r] = make([]HostSummary, len(st.Snap.Hosts))
	}
	x := &st.sum[r][h]
	if !x.ok {
		m := st.HostMoments(r, h)
		w, maxVar := 0, m[1]
		for s := 1; 2*s < len(m); s++ {
			if m[2*s] > m[2*w] {
				w = s
			}
			maxVar = max(maxVar, m[2*s+1])
		}
		*x = HostSummary{Mu0: m[0], Peak: st.HostPeakExcess(r, h), WorstStep: w, WorstMu: m[2*w], WorstVar: m[2*w+1],
			MaxMu: m[2*w], MaxVar: maxVar, ok: true}
	}
	return x
}

// HostPeakExcess is the largest PeakExcess of r among the VMs on h (0 for an
// empty host). It is summed once and kept until h's VM list changes, so the
// peak rule costs a selection O(1) per host instead of a pass over its VMs.
func (st *State) HostPeakExcess(r model.Resource, h int) float64 {
	if st.peakOK[r] == nil {
		st.peak[r] = make([]float64, len(st.Snap.Hosts))
		st.peakOK[r] = make([]bool, len(st.Snap.Hosts))
	}
	if !st.peakOK[r][h] {
		ex := 0.0
		for _, x := range st.on[h] {
			ex = max(ex, st.PeakExcess(r, x))
		}
		st.peak[r][h], st.peakOK[r][h] = ex, true
	}
	return st.peak[r][h]
}

// HostMoments is h's cached moments of r without any VM added, as HostMomentOf
// reads them: the mean of step s at 2s and the variance at 2s+1. The slice is
// valid until h's VM list changes; do not modify it.
func (st *State) HostMoments(r model.Resource, h int) []float64 {
	st.HostMomentOf(r, h, -1, 0) // fills the cache
	return st.mom[r][h]
}

// Remove takes v off h, keeping the order of the rest.
func (st *State) Remove(v, h int) {
	l := st.on[h]
	for i, x := range l {
		if x == v {
			st.on[h] = append(l[:i], l[i+1:]...)
			break
		}
	}
	if st.where[v] == h {
		st.where[v] = -1
	}
	// Sums are rebuilt rather than decremented so that a host that empties reads exactly 0.
	st.recompute(h)
}

// Requested is the CPU the VMs on h ask for, plus what v needs if v >= 0.
func (st *State) Requested(h, v int) float64 {
	r := st.req[h]
	if v >= 0 {
		r += st.Need(v).CPU
	}
	return r
}

// Available is the CPU h's scheduler can still hand out: zero once oversubscribed.
func (st *State) Available(h int) float64 {
	c := st.Snap.Hosts[h].Capacity.CPU
	if st.alloc[h] > c {
		return 0
	}
	return c - st.alloc[h]
}

// InUse is the CPU the VMs on h use, counting a migrating-in VM in full because it
// will run there once the copy ends.
func (st *State) InUse(h int) float64 {
	if st.inUseOK == nil {
		st.inUse = make([]float64, len(st.Snap.Hosts))
		st.inUseOK = make([]bool, len(st.Snap.Hosts))
	}
	if !st.inUseOK[h] {
		st.inUse[h], st.inUseOK[h] = st.inUseOf(h), true
	}
	return st.inUse[h]
}

// inUseOf sums InUse afresh; InUse keeps it until h's VM list changes, since
// CloudSim's best fit asks it of every host for every VM it places.
func (st *State) inUseOf(h int) float64 {
	c := st.Snap.Hosts[h].Capacity.CPU
	if st.alloc[h] <= c {
		u := 0.0
		for _, v := range st.on[h] {
			u += st.capped(v, h)
		}
		return u
	}
	scale := c / st.alloc[h]
	u := 0.0
	for _, v := range st.on[h] {
		a := st.capped(v, h)
		if st.migratingIn(v, h) {
			u += math.Floor(a*MigratingInShare*scale) / MigratingInShare
		} else {
			u += math.Floor(a * scale)
		}
	}
	return u
}

// Suitable reports whether h has room for v now: each vCPU fits a PE, the scheduler
// has the CPU, and memory, network and disk fit.
func (st *State) Suitable(v, h int) bool {
	_, ok := st.NoRoom(v, h)
	return ok
}

// NoRoom is Suitable naming the resource that lacks room now when it fails: ok is
// false and r the first of CPU (cores or scheduler), memory, network, disk that
// does not fit. A capacity of 0 means unknown and never binds.
func (st *State) NoRoom(v, h int) (r model.Resource, ok bool) {
	return st.NoRoomFor(v, h, st.Need(v))
}

// NoRoomFor is NoRoom with v's Need already worked out (need must be Need(v)): a
// selection asks it of every host for one VM.
func (st *State) NoRoomFor(v, h int, need model.Resources) (r model.Resource, ok bool) {
	vm := &st.Snap.VMs[v]
	host := &st.Snap.Hosts[h]
	if host.PEMIPS > 0 && need.CPU/float64(max(vm.VCPU, 1)) > host.PEMIPS {
		return model.CPU, false
	}
	if host.Capacity.CPU > 0 && st.Available(h) < need.CPU {
		return model.CPU, false
	}
	after := st.other[h].Add(need)
	for _, k := range model.AllResources[1:] {
		if c := host.Capacity.Get(k); c > 0 && after.Get(k) > c {
			return k, false
		}
	}
	return model.CPU, true
}

// Load is what the VMs on h ask for in each resource (CPU: requested demand; the
// others: need, reservations included), plus v's need if v >= 0.
func (st *State) Load(h, v int) model.Resources {
	l := st.other[h]
	l.CPU = st.req[h]
	if v >= 0 {
		l = l.Add(st.Need(v))
	}
	return l
}

// History is h's CPU utilisation history (newest first), the VM histories weighted by
// VM size over host capacity, plus v's if v >= 0, with the all-zero oldest tail cut.
// The returned slice is valid until the next call.
func (st *State) History(h, v int) []float64 {
	base := st.hist[h]
	if base == nil {
		base = make([]float64, st.maxLen)
		c := st.Snap.Hosts[h].Capacity.CPU
		for _, x := range st.on[h] {
			vm := &st.Snap.VMs[x]
			w := vm.Size.CPU / c
			for i, u := range vm.History {
				base[i] += u * w
			}
		}
		st.hist[h] = base
	}
	out := st.histBuf(len(base))
	copy(out, base)
	if v >= 0 {
		vm := &st.Snap.VMs[v]
		w := vm.Size.CPU / st.Snap.Hosts[h].Capacity.CPU
		for i, u := range vm.History {
			out[i] += u * w
		}
	}
	n := len(out)
	for n > 0 && out[n-1] == 0 {
		n--
	}
	return out[:n]
}

func (st *State) histBuf(n int) []float64 {
	if cap(st.buf) < n {
		st.buf = make([]float64, n)
	}
	return st.buf[:n]
}

// MigrationSeconds is how long moving v off host h takes: the VM's own estimate
// when the snapshot has one (the live controller's transfer model), else its
// memory at half of h's network capacity (the other half carries the VMs' own
// traffic; CloudSim's rule). Memory in MB, network in KB/s.
func (st *State) MigrationSeconds(v, h int) float64 {
	if s := st.vmMigSecs[v]; s > 0 {
		return s
	}
	bw := st.Snap.Hosts[h].Capacity.Net / 2 / 1000
	if bw <= 0 {
		return 0
	}
	return st.vmMem[v] / bw
}
