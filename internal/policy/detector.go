// Package policy holds the rules that say when a host is overloaded and which VMs to
// move off it: CloudSim's detectors (THR, IQR, MAD, LR, LRR) and MMT selection, and the
// headroom policy's configuration.
package policy

import (
	"fmt"
	"math"
	"slices"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// Detector decides whether a host is overloaded. v >= 0 asks "if v were added".
type Detector interface {
	Name() string
	Overloaded(st *cluster.State, h, v int) bool
}

// Threshold (THR): overloaded when requested CPU exceeds a fixed share of capacity.
type Threshold struct{ T float64 }

func (d Threshold) Name() string { return fmt.Sprintf("thr-%g", d.T) }

func (d Threshold) Overloaded(st *cluster.State, h, v int) bool {
	return st.Requested(h, v)/st.Snap.Hosts[h].Capacity.CPU > d.T
}

// MultiThreshold (MTHR): THR applied to every resource; overloaded when the load of
// any resource exceeds T x its capacity. A capacity of 0 means unknown and never binds.
type MultiThreshold struct{ T float64 }

func (d MultiThreshold) Name() string { return fmt.Sprintf("mthr-%g", d.T) }

func (d MultiThreshold) Overloaded(st *cluster.State, h, v int) bool {
	_, over := d.Binding(st, h, v)
	return over
}

// Binding is the first resource whose load passes the threshold, if any.
func (d MultiThreshold) Binding(st *cluster.State, h, v int) (model.Resource, bool) {
	load, c := st.Load(h, v), st.Snap.Hosts[h].Capacity
	for _, r := range model.AllResources {
		if cr := c.Get(r); cr > 0 && load.Get(r) > d.T*cr {
			return r, true
		}
	}
	return model.CPU, false
}

// fallback decides while a host's history is too short for the adaptive detectors.
var fallback = Threshold{T: 0.7}

// minHistoryIQR is the history CloudSim asks for before trusting IQR or MAD.
const minHistoryIQR = 12

// IQR: threshold = 1 - S * interquartile range of the host's utilisation history.
type IQR struct{ S float64 }

func (d IQR) Name() string { return fmt.Sprintf("iqr-%g", d.S) }

func (d IQR) Overloaded(st *cluster.State, h, v int) bool {
	hist := st.History(h, v)
	if len(hist) < minHistoryIQR {
		return fallback.Overloaded(st, h, v)
	}
	return st.Requested(h, v)/st.Snap.Hosts[h].Capacity.CPU > 1-d.S*iqr(hist)
}

// MAD: threshold = 1 - S * median absolute deviation of the history.
type MAD struct{ S float64 }

func (d MAD) Name() string { return fmt.Sprintf("mad-%g", d.S) }

func (d MAD) Overloaded(st *cluster.State, h, v int) bool {
	hist := st.History(h, v)
	if len(hist) < minHistoryIQR {
		return fallback.Overloaded(st, h, v)
	}
	return st.Requested(h, v)/st.Snap.Hosts[h].Capacity.CPU > 1-d.S*mad(hist)
}

// lrWindow is how many recent values the regression sees.
const lrWindow = cluster.RecentWindow

// LR: a least-squares line through the last 10 utilisation values, extrapolated past
// the longest migration off the host; overloaded when S times it reaches 1. CloudSim's
// LRR is the same fit (its robust weights are never applied), so both names map here.
type LR struct {
	S      float64
	Robust bool // only changes the name
}

func (d LR) Name() string {
	if d.Robust {
		return fmt.Sprintf("lrr-%g", d.S)
	}
	return fmt.Sprintf("lr-%g", d.S)
}

func (d LR) Overloaded(st *cluster.State, h, v int) bool {
	if over, sure := d.settled(st, h, v); sure {
		return over
	}
	// The last lrWindow values of History(h, v), formed without the rest.
	var hist [lrWindow]float64
	if !st.RecentHistory(h, v, hist[:]) {
		return fallback.Overloaded(st, h, v)
	}
	// x = 1..10 oldest to newest; hist is newest first.
	var sx, sy, sxx, sxy float64
	for i := 0; i < lrWindow; i++ {
		x := float64(i + 1)
		y := hist[lrWindow-1-i]
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	n := float64(lrWindow)
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icept := (sy - slope*sx) / n
	steps := math.Ceil(maxMigrationSeconds(st, h, v) / st.Snap.Interval)
	return (icept+slope*(n+steps))*d.S >= 1
}

// settled decides from the host's kept sums (cluster.State.RecentSums) when
// the line they give is far enough from the threshold that the rounding of
// History's values and of the fit cannot take it across: the exact fit would
// decide the same. CloudSim's best fit runs the detector on every host that
// would win but for it, and most are far from the threshold.
func (d LR) settled(st *cluster.State, h, v int) (over, sure bool) {
	if !(d.S > 0) || math.IsInf(d.S, 0) {
		return false, false
	}
	sy, sxy, l1, ok := st.RecentSums(h, v)
	if !ok {
		return false, false
	}
	steps := math.Ceil(maxMigrationSeconds(st, h, v) / st.Snap.Interval)
	if !(steps >= 0) || math.IsInf(steps, 0) {
		return false, false
	}
	n := float64(lrWindow)
	sx, sxx := n*(n+1)/2, n*(n+1)*(2*n+1)/6
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	pred := (sy-slope*sx)/n + slope*(n+steps)
	// Rounding moves the fit by far less than 1e-13 (l1 + 1) (n + 1 +
	// steps); the margin is ten thousand times that.
	margin := 1e-9 * (1 + l1) * (n + 1 + steps)
	switch {
	case (pred-margin)*d.S >= 1+1e-9:
		return true, true
	case (pred+margin)*d.S < 1-1e-9:
		return false, true
	}
	return false, false
}

// A best-fit search runs the detector on many hosts for one VM. HostFloor and
// VMFloor let it pass over, unread, hosts LR is sure to call overloaded: for a
// host h whose CPU in use is not 0 and a VM v, and c the CPU capacity of h,
//
//	(d.HostFloor(st, h) + d.VMFloor(st, v, c)) * d.S >= 1 + 1e-9
//
// means d.Overloaded(st, h, v). The line LR extrapolates is the host's line
// plus v's (it is linear in the values), at a number of steps between the
// host's own and the longest any VM could take (State.MaxMigrationSeconds), so
// each part is its least value at either end, less a margin far above the
// rounding (as in settled). Either is -Inf when it cannot tell.
func (d LR) HostFloor(st *cluster.State, h int) float64 {
	tmax := math.Ceil(st.MaxMigrationSeconds() / st.Snap.Interval)
	if !(d.S > 0) || math.IsInf(d.S, 0) || !(tmax >= 0) || math.IsInf(tmax, 0) {
		return math.Inf(-1)
	}
	sy, sxy, l1, ok := st.RecentSums(h, -1)
	if !ok {
		return math.Inf(-1)
	}
	t0 := math.Ceil(st.HostMaxMigrationSeconds(h) / st.Snap.Interval)
	if !(t0 >= 0) || t0 > tmax {
		return math.Inf(-1)
	}
	return lrFloor(sy, sxy, t0, tmax) - 1e-9*(1+l1)*(lrWindow+1+tmax)
}

// VMFloor: see HostFloor; c is the capacity of the hosts it is for.
func (d LR) VMFloor(st *cluster.State, v int, c float64) float64 {
	tmax := math.Ceil(st.MaxMigrationSeconds() / st.Snap.Interval)
	if !(tmax >= 0) || math.IsInf(tmax, 0) {
		return math.Inf(-1)
	}
	vm := &st.Snap.VMs[v]
	w := vm.Size.CPU / c
	if !(w >= 0) || math.IsInf(w, 0) {
		return math.Inf(-1)
	}
	// As RecentSums: v's values must not shorten the host's history.
	var a, b, m float64
	for i, u := range vm.History[:min(len(vm.History), lrWindow)] {
		if !(u >= 0) || math.IsInf(u, 0) {
			return math.Inf(-1)
		}
		x := float64(lrWindow - i)
		a += u
		b += x * u
		m += u
	}
	f := w*lrFloor(a, b, 0, tmax) - 1e-9*(w*m)*(lrWindow+1+tmax)
	if math.IsNaN(f) {
		return math.Inf(-1)
	}
	return f
}

// lrFloor is the least of the fitted line's value at n + t, t in [t0, t1]:
// it is linear in t, so at an end.
func lrFloor(sy, sxy, t0, t1 float64) float64 {
	n := float64(lrWindow)
	sx, sxx := n*(n+1)/2, n*(n+1)*(2*n+1)/6
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icept := (sy - slope*sx) / n
	return min(icept+slope*(n+t0), icept+slope*(n+t1))
}

// maxMigrationSeconds is the longest MigrationSeconds off h of its VMs and v:
// the host's part is kept in the State until its VM list changes (max is
// associative, so adding v's last gives the loop's value).
func maxMigrationSeconds(st *cluster.State, h, v int) float64 {
	m := st.HostMaxMigrationSeconds(h)
	if v >= 0 {
		m = max(m, st.MigrationSeconds(v, h))
	}
	return m
}

// iqr uses CloudSim's quartile positions: round(q*(n+1)) - 1 in the sorted data.
func iqr(data []float64) float64 {
	s := slices.Clone(data)
	slices.Sort(s)
	n := float64(len(s))
	q1 := int(math.Floor(0.25*(n+1)+0.5)) - 1
	q3 := int(math.Floor(0.75*(n+1)+0.5)) - 1
	q1 = min(max(q1, 0), len(s)-1)
	q3 = min(max(q3, 0), len(s)-1)
	return s[q3] - s[q1]
}

func median(s []float64) float64 {
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mad(data []float64) float64 {
	if len(data) == 0 {
		return 0
	}
	s := slices.Clone(data)
	m := median(s)
	for i := range s {
		s[i] = math.Abs(s[i] - m)
	}
	return median(s)
}
