package cluster

import (
	"math"

	"github.com/headroom/headroom/internal/model"
)

// Forecast moments: each VM's demand of a resource at horizon step s (1-based; step
// 0 is now) is read from its forecast as a mean and a standard deviation, the
// deviation being the distance to the upper bound over the normal quantile of the
// bound's confidence. A VM without a forecast of that resource counts at its current
// need with no spread. The four resources share one code path: every function here
// takes the resource as a parameter.

// Steps is the number of forecast steps all VMs share (0 without forecasts).
func (st *State) Steps() int { return st.steps }

func countSteps(st *State) int {
	if len(st.Forecasts) == 0 {
		return 0
	}
	n := math.MaxInt
	for i := range st.Forecasts {
		if k := len(st.Forecasts[i].PredictedCPU); k > 0 && k < n {
			n = k
		}
	}
	if n == math.MaxInt {
		return 0
	}
	return n
}

// predicted is f's point forecast of r.
func predicted(f *model.ResourceForecast, r model.Resource) []float64 {
	switch r {
	case model.CPU:
		return f.PredictedCPU
	case model.Mem:
		return f.PredictedMemory
	case model.Net:
		return f.PredictedNetworkIO
	default:
		return f.PredictedDiskIO
	}
}

// VMMoment is v's CPU demand mean and variance at step s.
func (st *State) VMMoment(v, s int) (mu, variance float64) { return st.VMMomentOf(model.CPU, v, s) }

// VMMomentOf is v's demand of r: mean and variance at step s.
func (st *State) VMMomentOf(r model.Resource, v, s int) (mu, variance float64) {
	if s == 0 || v >= len(st.Forecasts) {
		return st.Need(v).Get(r), 0
	}
	f := &st.Forecasts[v]
	p := predicted(f, r)
	if s > len(p) || s > len(f.Upper) {
		return st.Need(v).Get(r), 0
	}
	mu = max(p[s-1], 0)
	if up := f.Upper[s-1].Get(r); up > mu && f.Confidence > 0 && f.Confidence < 1 {
		if f.Confidence != st.zConf {
			st.zConf, st.z = f.Confidence, math.Sqrt2*math.Erfinv(2*f.Confidence-1)
		}
		sd := (up - mu) / st.z
		variance = sd * sd
	}
	return mu, variance
}

// HostMoment is the CPU demand mean and variance of the VMs on h (plus v if v >= 0)
// at step s. VMs migrating in count in full: they will run there.
func (st *State) HostMoment(h, v, s int) (mu, variance float64) {
	return st.HostMomentOf(model.CPU, h, v, s)
}

// HostMomentOf is HostMoment for resource r. A host's moments are summed once per
// resource and kept until its VM list changes.
func (st *State) HostMomentOf(r model.Resource, h, v, s int) (mu, variance float64) {
	if st.mom[r] == nil {
		st.mom[r] = make([][]float64, len(st.Snap.Hosts))
	}
	n := st.Steps() + 1
	m := st.mom[r][h]
	if m == nil {
		m = make([]float64, 2*n)
		for _, x := range st.on[h] {
			for k := 0; k < n; k++ {
				a, b := st.VMMomentOf(r, x, k)
				m[2*k] += a
				m[2*k+1] += b
			}
		}
		st.mom[r][h] = m
	}
	mu, variance = m[2*s], m[2*s+1]
	if v >= 0 {
		a, b := st.VMMomentOf(r, v, s)
		mu += a
		variance += b
	}
	return mu, variance
}

// PeakExcess is how far above its current need v has gone in r recently: its
// forecast's Peak less its need now, or 0 without a peak.
func (st *State) PeakExcess(r model.Resource, v int) float64 {
	if v >= len(st.Forecasts) {
		return 0
	}
	return max(st.Forecasts[v].Peak.Get(r)-st.Need(v).Get(r), 0)
}
