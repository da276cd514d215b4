package backtest

import (
	"math"
	"slices"

	"github.com/headroom/headroom/internal/trace"
)

// Reference is a point estimate that is not a forecaster: it looks ahead, or
// picks per VM with the test period's own errors. It shows how much of the
// baselines' error any forecaster could remove at all: a target below a
// reference's ratio is out of reach for level estimators.
type Reference struct {
	Name     string  `json:"name"`
	Resource string  `json:"resource"`
	MAE      float64 `json:"mae"`
	// Ratio is MAE over mean12's, on the same origins and steps.
	Ratio float64 `json:"ratio_to_mean12"`
	N     int64   `json:"n"`
}

// References, in order:
//   - lookahead-median48: at each origin, the median of the 24 samples before
//     the origin and the 24 after the horizon, never the targets themselves.
//   - lookahead-best: per VM and resource, whichever of the median, the mean
//     and the 25 % trimmed mean of such centred windows of 24, 48 and 96
//     samples had the least error over the whole test period.
//   - hindsight-trailing-best: per VM and resource, whichever of the same
//     estimators over the last 12, 24, 48 or 96 samples (no look-ahead) had
//     the least error over the test period: online model choice can at most
//     reach this with these estimators.
var References = []string{"lookahead-median48", "lookahead-best", "hindsight-trailing-best"}

var (
	centredWindows  = []int{24, 48, 96}
	trailingWindows = []int{12, 24, 48, 96}
)

// estimators from one sorted window: median, mean, 25 % trimmed mean.
const nEst = 3

func estimates(sorted []float64, out []float64) {
	n := len(sorted)
	if n == 0 {
		clear(out[:nEst])
		return
	}
	if n%2 == 1 {
		out[0] = sorted[n/2]
	} else {
		out[0] = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	var s float64
	for _, v := range sorted {
		s += v
	}
	out[1] = s / float64(n)
	k := n / 4
	s = 0
	for _, v := range sorted[k : n-k] {
		s += v
	}
	out[2] = s / float64(n-2*k)
}

// RunReferences scores the References on every VM and resource of w, on the
// origins and steps Run scores (same warm-up and horizon).
func RunReferences(w *trace.Workload, opts Options) ([]Reference, error) {
	if opts.Confidence == 0 {
		opts.Confidence = 0.9 // unused here, but check wants one
	}
	if err := check(w, &opts); err != nil {
		return nil, err
	}
	resources := resourcesOf(w)
	nc, nt := len(centredWindows)*nEst, len(trailingWindows)*nEst
	type vmOut struct {
		mean12, med48, bestC, bestT []float64 // by resource
		n                           []int64
	}
	outs := make([]vmOut, len(w.VMs))
	eachVM(len(w.VMs), opts.Progress, func() func(int) {
		win := make([]float64, 0, 128)
		est := make([]float64, nEst)
		ec, et := make([]float64, nc), make([]float64, nt)
		return func(i int) {
			o := &outs[i]
			k := len(resources)
			o.mean12, o.med48, o.bestC, o.bestT, o.n = make([]float64, k), make([]float64, k), make([]float64, k), make([]float64, k), make([]int64, k)
			for ri, r := range resources {
				x := series(&w.VMs[i], r)
				clear(ec)
				clear(et)
				h := opts.Horizon
				for t := opts.Warmup; t+h <= len(x); t++ {
					targets := x[t : t+h]
					score := func(errs []float64, at int) {
						for j := range nEst {
							for _, y := range targets {
								errs[at+j] += math.Abs(float64(y) - est[j])
							}
						}
					}
					win = appendFloat(win[:0], x[max(0, t-12):t])
					var m12 float64
					for _, v := range win {
						m12 += v
					}
					m12 /= float64(len(win))
					for _, y := range targets {
						o.mean12[ri] += math.Abs(float64(y) - m12)
					}
					for wi, n := range trailingWindows {
						win = appendFloat(win[:0], x[max(0, t-n):t])
						slices.Sort(win)
						estimates(win, est)
						score(et, wi*nEst)
					}
					for wi, n := range centredWindows {
						win = appendFloat(win[:0], x[max(0, t-n/2):t])
						win = appendFloat(win, x[t+h:min(len(x), t+h+n/2)])
						slices.Sort(win)
						estimates(win, est)
						if n == 48 {
							for _, y := range targets {
								o.med48[ri] += math.Abs(float64(y) - est[0])
							}
						}
						score(ec, wi*nEst)
					}
					o.n[ri] += int64(h)
				}
				o.bestC[ri], o.bestT[ri] = slices.Min(ec), slices.Min(et)
			}
		}
	})
	var refs []Reference
	for k, name := range References {
		for ri, r := range resources {
			var m12, e float64
			var n int64
			for i := range outs {
				o := &outs[i]
				m12 += o.mean12[ri]
				n += o.n[ri]
				e += [][]float64{o.med48, o.bestC, o.bestT}[k][ri]
			}
			refs = append(refs, Reference{Name: name, Resource: r.String(), MAE: ratio(e, float64(n)),
				Ratio: ratio(e, m12), N: n})
		}
	}
	return refs, nil
}

func appendFloat(dst []float64, src []float32) []float64 {
	for _, v := range src {
		dst = append(dst, float64(v))
	}
	return dst
}
