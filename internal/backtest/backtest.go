// Package backtest walks forecasting models forward through a workload's traces
// and scores them: point error, and coverage of the calibrated upper bound.
package backtest

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
)

// Options configure Run.
type Options struct {
	Horizon    int      // steps ahead; every step 1..Horizon is scored
	Confidence float64  // of the upper bound
	Models     []string // besides default, last and mean12, which are always run
	// Warmup is the first forecast origin: the number of samples every model
	// has seen before its first scored forecast. Default 12.
	Warmup int
	// Samples is how many VMs keep their forecast traces for plots. Default 3.
	Samples int
	// Every scores only every Every-th origin from the warm-up on (default 1:
	// all); the models still see every sample. A slow peer is run on such a
	// subset, and every row is then scored on the same one.
	Every int
	// EveryVM scores only every EveryVM-th VM of the workload (default 1: all),
	// for every row alike.
	EveryVM int
	// Progress, if set, is called with (VMs done, total) as VMs finish.
	Progress func(done, total int)
}

// Baselines are always in a result.
var Baselines = []string{forecast.DefaultModel, "last", "mean12"}

// CalibrationLevels are the confidences at which the default model's coverage
// is also measured, for the calibration curve.
var CalibrationLevels = []float64{0.5, 0.8, 0.9, 0.95, 0.99}

// Score is one model's accuracy on one resource, over every VM, origin and
// horizon step.
type Score struct {
	Name     string  `json:"name"`
	Resource string  `json:"resource"`
	MAE      float64 `json:"mae"`
	RMSE     float64 `json:"rmse"`
	// Pinball is the quantile loss of the upper bound at the stated confidence.
	Pinball float64 `json:"pinball"`
	// Coverage is the fraction of actuals at or below the upper bound.
	Coverage float64 `json:"coverage"`
	N        int64   `json:"n"`
	// MAEByStep is the MAE at each horizon step, 1 to Horizon.
	MAEByStep []float64 `json:"mae_by_step"`
}

// Calibration is the default model's measured coverage at one stated level.
type Calibration struct {
	Resource string  `json:"resource"`
	Stated   float64 `json:"stated"`
	Measured float64 `json:"measured"`
}

// Trace is the default model's forecast for one VM and resource, step
// Horizon ahead, aligned to the sample it targets.
type Trace struct {
	VM, Resource  string
	Index         []float64 // sample index of the target
	Actual, Point []float64
	Upper         []float64
}

// Result is what Run measured.
type Result struct {
	Workload   string  `json:"workload"`
	Step       float64 `json:"step_seconds"`
	Horizon    int     `json:"horizon_steps"`
	Confidence float64 `json:"confidence"`
	Warmup     int     `json:"warmup"`
	// Every is Options.Every: 1 when every origin was scored.
	Every       int           `json:"every_origin"`
	EveryVM     int           `json:"every_vm"`
	VMs         int           `json:"vms"`
	Models      []Score       `json:"models"`
	Calibration []Calibration `json:"calibration"`
	// References are filled in by the caller from RunReferences, if asked for.
	References []Reference `json:"references,omitempty"`
	Traces     []Trace     `json:"-"`
}

type acc struct {
	abs, sq, pin float64
	cov, n       int64
	step         []float64 // absolute error by horizon step
}

func (a *acc) add(b acc) {
	if a.step == nil {
		a.step = make([]float64, len(b.step))
	}
	for k, e := range b.step {
		a.step[k] += e
	}
	a.abs += b.abs
	a.sq += b.sq
	a.pin += b.pin
	a.cov += b.cov
	a.n += b.n
}

func series(s *trace.Series, r model.Resource) []float32 {
	switch r {
	case model.CPU:
		return s.CPU
	case model.Mem:
		return s.Mem
	case model.Net:
		return s.Net
	default:
		return s.Disk
	}
}

// check validates w and opts and fills in opts' defaults.
func check(w *trace.Workload, opts *Options) error {
	if w == nil || len(w.VMs) == 0 {
		return fmt.Errorf("backtest: empty workload")
	}
	if opts.Horizon < 1 {
		return fmt.Errorf("backtest: horizon %d steps, want at least 1", opts.Horizon)
	}
	if !(opts.Confidence > 0 && opts.Confidence < 1) {
		return fmt.Errorf("backtest: confidence %v out of (0,1)", opts.Confidence)
	}
	if opts.Warmup == 0 {
		opts.Warmup = 12
	}
	if opts.Samples == 0 {
		opts.Samples = 3
	}
	if opts.Every == 0 {
		opts.Every = 1
	}
	if opts.Every < 0 {
		return fmt.Errorf("backtest: every %d origins, want at least 1", opts.Every)
	}
	if opts.EveryVM == 0 {
		opts.EveryVM = 1
	}
	if opts.EveryVM < 0 {
		return fmt.Errorf("backtest: every %d VMs, want at least 1", opts.EveryVM)
	}
	if n := w.Len(); n < opts.Warmup+opts.Horizon {
		return fmt.Errorf("backtest: %d samples; the first forecast needs %d of warm-up and %d ahead", n, opts.Warmup, opts.Horizon)
	}
	return nil
}

// Run backtests opts.Models plus the baselines on every VM and resource of w.
// Each model sees sample i only after its forecast from origin i has been
// scored, so nothing looks ahead; all models start at the same origin.
func Run(w *trace.Workload, opts Options) (*Result, error) {
	if err := check(w, &opts); err != nil {
		return nil, err
	}
	w = subsetVMs(w, opts.EveryVM)
	names := slices.Clone(Baselines)
	for _, m := range opts.Models {
		if _, err := forecast.Lookup(m); err != nil {
			return nil, fmt.Errorf("backtest: %w", err)
		}
		if !slices.Contains(names, m) {
			names = append(names, m)
		}
	}
	levels := append(slices.Clone(CalibrationLevels), opts.Confidence)
	cfgs := make([]forecast.Config, len(names))
	for i, n := range names {
		cfgs[i] = forecast.Config{Step: w.Step, Horizon: opts.Horizon, Levels: levels, Model: n}
		if _, err := forecast.NewSeries(cfgs[i]); err != nil {
			return nil, fmt.Errorf("backtest: %w", err)
		}
	}

	resources := resourcesOf(w)
	samples := sampleVMs(w, opts.Samples)

	type vmOut struct {
		acc    [][]acc // [model][resource]
		cal    [][]acc // [resource][level], default model only
		traces []Trace
	}
	outs := make([]vmOut, len(w.VMs))
	eachVM(len(w.VMs), opts.Progress, func() func(int) {
		return func(i int) {
			o := &outs[i]
			o.acc = make([][]acc, len(names))
			for m := range names {
				o.acc[m] = make([]acc, len(resources))
			}
			o.cal = make([][]acc, len(resources))
			for ri, r := range resources {
				x := series(&w.VMs[i], r)
				o.cal[ri] = make([]acc, len(CalibrationLevels))
				for m := range names {
					var tr *Trace
					if m == 0 && samples[i] {
						o.traces = append(o.traces, Trace{VM: w.VMs[i].ID, Resource: r.String()})
						tr = &o.traces[len(o.traces)-1]
					}
					var cal []acc
					if m == 0 {
						cal = o.cal[ri]
					}
					o.acc[m][ri] = walk(x, cfgs[m], opts, cal, tr)
				}
			}
		}
	})

	res := &Result{Workload: w.Name, Step: w.Step, Horizon: opts.Horizon, Confidence: opts.Confidence,
		Warmup: opts.Warmup, Every: opts.Every, EveryVM: opts.EveryVM, VMs: len(w.VMs)}
	for m, name := range names {
		for ri, r := range resources {
			var a acc
			for i := range outs {
				a.add(outs[i].acc[m][ri])
			}
			res.Models = append(res.Models, score(name, r, a))
		}
	}
	for ri, r := range resources {
		for li, l := range CalibrationLevels {
			var a acc
			for i := range outs {
				a.add(outs[i].cal[ri][li])
			}
			res.Calibration = append(res.Calibration, Calibration{Resource: r.String(), Stated: l, Measured: ratio(float64(a.cov), float64(a.n))})
		}
	}
	for i := range outs {
		res.Traces = append(res.Traces, outs[i].traces...)
	}
	return res, nil
}

// subsetVMs is every k-th VM of w, from the first.
func subsetVMs(w *trace.Workload, k int) *trace.Workload {
	if k <= 1 {
		return w
	}
	c := *w
	c.VMs = nil
	for i := 0; i < len(w.VMs); i += k {
		c.VMs = append(c.VMs, w.VMs[i])
	}
	return &c
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func score(name string, r model.Resource, a acc) Score {
	n := float64(a.n)
	sc := Score{Name: name, Resource: r.String(), MAE: ratio(a.abs, n), RMSE: math.Sqrt(ratio(a.sq, n)),
		Pinball: ratio(a.pin, n), Coverage: ratio(float64(a.cov), n), N: a.n}
	for _, e := range a.step {
		sc.MAEByStep = append(sc.MAEByStep, ratio(e, n/float64(len(a.step))))
	}
	return sc
}

// walk runs one model over one series. cal, if not nil, collects coverage at
// CalibrationLevels; tr, if not nil, records the last-step forecasts.
func walk(x []float32, cfg forecast.Config, opts Options, cal []acc, tr *Trace) acc {
	s, _ := forecast.NewSeries(cfg)
	h := opts.Horizon
	c := float32(opts.Confidence)
	point := make([]float32, h)
	upper := make([]float32, h)
	lv := make([]float32, h)
	a := acc{step: make([]float64, h)}
	for i := range x {
		if i >= opts.Warmup && i+h <= len(x) && (i-opts.Warmup)%opts.Every == 0 {
			s.Forecast(point, upper, opts.Confidence)
			for k := range h {
				y := x[i+k]
				e := float64(y - point[k])
				a.abs += math.Abs(e)
				a.step[k] += math.Abs(e)
				a.sq += e * e
				u := float64(y - upper[k])
				if u >= 0 {
					a.pin += float64(c) * u
				} else {
					a.pin -= (1 - float64(c)) * u
				}
				if y <= upper[k] {
					a.cov++
				}
			}
			a.n += int64(h)
			for li, l := range CalibrationLevels {
				if cal == nil {
					break
				}
				s.Forecast(point, lv, l)
				for k := range h {
					if x[i+k] <= lv[k] {
						cal[li].cov++
					}
				}
				cal[li].n += int64(h)
			}
			if tr != nil {
				tr.Index = append(tr.Index, float64(i+h-1))
				tr.Actual = append(tr.Actual, float64(x[i+h-1]))
				tr.Point = append(tr.Point, float64(point[h-1]))
				tr.Upper = append(tr.Upper, float64(upper[h-1]))
			}
		}
		s.Observe(x[i])
	}
	return a
}

// sampleVMs picks the VMs whose traces are kept: spread over the range of mean
// CPU, so the plots show a busy, a middling and a quiet VM.
func sampleVMs(w *trace.Workload, n int) []bool {
	type vm struct {
		i int
		m float64
	}
	vs := make([]vm, len(w.VMs))
	for i := range w.VMs {
		var s float64
		for _, v := range w.VMs[i].CPU {
			s += float64(v)
		}
		vs[i] = vm{i, s / float64(max(len(w.VMs[i].CPU), 1))}
	}
	sort.SliceStable(vs, func(a, b int) bool { return vs[a].m > vs[b].m })
	keep := make([]bool, len(w.VMs))
	n = min(n, len(vs))
	for k := range n {
		j := 0
		if n > 1 {
			j = k * (len(vs) - 1) / (n - 1) / 2 // the busier half: quiet VMs plot as flat lines
		}
		keep[vs[j].i] = true
	}
	return keep
}

// resourcesOf lists the resources w's traces have.
func resourcesOf(w *trace.Workload) []model.Resource {
	var rs []model.Resource
	for _, r := range model.AllResources {
		if series(&w.VMs[0], r) != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// eachVM calls a worker for every i in [0, n) on GOMAXPROCS goroutines, and
// progress, if set, after each. newWorker makes one goroutine's worker, so that
// it can keep scratch space.
func eachVM(n int, progress func(done, total int), newWorker func() func(i int)) {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work := newWorker()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				work(i)
				if progress != nil {
					progress(int(done.Add(1)), n)
				}
			}
		}()
	}
	wg.Wait()
}
