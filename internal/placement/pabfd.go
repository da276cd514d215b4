// Package placement chooses target hosts. PABFD is CloudSim's power-aware best fit
// decreasing; the headroom chain of filters and scorers lives beside it.
package placement

import (
	"bytes"
	"math"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/policy"
)

// PABFD picks, among hosts not excluded that have room and that the detector would
// not call overloaded with the VM added, the one whose power rises least.
type PABFD struct {
	Detector policy.Detector
}

// PowerDelta is the rise in h's power if v is added: power at the what-if CPU in use
// plus v's demand, minus power at the host's measured utilisation.
func PowerDelta(st *cluster.State, v, h int) float64 {
	host := &st.Snap.Hosts[h]
	if host.Capacity.CPU <= 0 {
		return 0 // unknown CPU capacity: no power model to compare
	}
	after := (st.InUse(h) + st.Need(v).CPU) / host.Capacity.CPU
	if after > 1 {
		return math.Inf(1)
	}
	return host.Power.Power(after) - host.Power.Power(min(host.Util, 1))
}

// Find returns the best host for v, or -1. Ties go to the lowest host index.
func (p PABFD) Find(st *cluster.State, v int, excluded []bool) int {
	return p.find(st, v, excluded, true)
}

// find is Find; with skipEmpty it looks at only the first empty host of each class
// (see hostClass), which finds the same host as looking at them all.
func (p PABFD) find(st *cluster.State, v int, excluded []bool, skipEmpty bool) int {
	best, bestDelta := -1, math.MaxFloat64
	info := infoOf(st)
	info.pabfd(st)
	var classes []int32
	var seen []bool
	if skipEmpty {
		classes = info.ids
		seen = make([]bool, info.n)
	}
	need := st.Need(v)
	n := len(st.Snap.Hosts)
	skip := excludedBytes(excluded, n)
	for h := 0; h < n; h++ {
		if excluded != nil && excluded[h] {
			j := bytes.IndexByte(skip[h:], 0)
			if j < 0 {
				break
			}
			h += j // the next host not excluded
		}
		if classes != nil && len(st.VMs(h)) == 0 {
			if k := classes[h]; seen[k] {
				continue
			} else {
				seen[k] = true
			}
		}
		// A floor of the rise that already cannot beat the best so far spares
		// summing the host's VMs (InUse), the bulk of a search in a large fleet.
		// It is checked before room: a host that fails either is passed over,
		// and the best so far changes only on a host that passes both.
		if bestDelta < math.MaxFloat64 && info.floor(st, need.CPU, h) >= bestDelta {
			continue
		}
		if _, ok := st.NoRoomFor(v, h, need); !ok {
			continue
		}
		// The detector only filters, so a host that cannot beat the best so far
		// needs no detector run; this keeps the result and skips most of the work.
		d := info.delta(st, need.CPU, h)
		if d >= bestDelta {
			continue
		}
		// An empty host is never called overloaded by what one VM brings.
		if st.InUse(h) != 0 && p.Detector.Overloaded(st, h, v) {
			continue
		}
		best, bestDelta = h, d
	}
	return best
}

// delta is PowerDelta(st, v, h) for a v that needs cpu, with the power at the
// measured utilisation read from x: the same expression on the same values.
func (x *hostInfo) delta(st *cluster.State, cpu float64, h int) float64 {
	host := &st.Snap.Hosts[h]
	if host.Capacity.CPU <= 0 {
		return 0
	}
	after := (st.InUse(h) + cpu) / host.Capacity.CPU
	if after > 1 {
		return math.Inf(1)
	}
	return host.Power.Power(after) - x.powerNow[h]
}

// floor is powerDeltaFloor(st, v, h) for a v that needs cpu, with the power at
// the measured utilisation and the curve's monotony read from x.
func (x *hostInfo) floor(st *cluster.State, cpu float64, h int) float64 {
	host := &st.Snap.Hosts[h]
	c := host.Capacity.CPU
	avail := st.Available(h)
	if c <= 0 || avail <= 0 || !x.monotone[h] {
		return math.Inf(-1)
	}
	p := &host.Power
	const slack = 1e-9
	after := (c-avail+cpu)/c - slack
	if after > 1 {
		return math.Inf(1)
	}
	return p.Power(max(after, 0)) - x.powerNow[h] - slack*(1+p[10])
}

// powerDeltaFloor is at most PowerDelta(st, v, h) for a host v fits (Suitable),
// or -Inf when it cannot tell. The CPU the scheduler hands out (a migrating-in VM
// at its copy share) is at most what InUse sums, and power does not fall with
// utilisation on a nondecreasing curve. The slack covers rounding, so the floor
// never passes the exact rise and the search chooses as before.
func powerDeltaFloor(st *cluster.State, v, h int) float64 {
	host := &st.Snap.Hosts[h]
	c := host.Capacity.CPU
	avail := st.Available(h)
	if c <= 0 || avail <= 0 {
		return math.Inf(-1)
	}
	p := &host.Power
	for i := 1; i < len(p); i++ {
		if p[i] < p[i-1] {
			return math.Inf(-1)
		}
	}
	const slack = 1e-9
	after := (c-avail+st.Need(v).CPU)/c - slack
	if after > 1 {
		return math.Inf(1) // past capacity: PowerDelta is +Inf
	}
	return p.Power(max(after, 0)) - p.Power(min(host.Util, 1)) - slack*(1+p[10])
}

// FirstFit returns the first host with room for v, or -1 (CloudSim's placement when
// nothing migrates).
func FirstFit(st *cluster.State, v int) int {
	for h := range st.Snap.Hosts {
		if st.Suitable(v, h) {
			return h
		}
	}
	return -1
}
