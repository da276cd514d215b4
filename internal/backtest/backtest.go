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
	full := w
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
		cal    []acc   // [resource*level], default model only
		traces []Trace
	}
	outs := make([]vmOut, len(w.VMs))
	for i := range outs {
		outs[i].acc = make([][]acc, len(names))
	}
	// The default model learns a prior across VMs (forecast.Engine), so it
	// runs over every VM of the workload at once, in time order, while the
	// others run VM by VM.
	fleetDone := make(chan fleetOut)
	go func() { fleetDone <- walkFleet(full, resources, cfgs[0], opts, samples) }()
	eachVM(len(w.VMs), opts.Progress, func() func(int) {
		return func(i int) {
			o := &outs[i]
			for m := range names[1:] {
				o.acc[m+1] = make([]acc, len(resources))
			}
			for ri, r := range resources {
				x := series(&w.VMs[i], r)
				for m := range names[1:] {
					o.acc[m+1][ri] = walk(x, cfgs[m+1], opts, nil, nil)
				}
			}
		}
	})
	f := <-fleetDone
	for i := range outs {
		outs[i].acc[0], outs[i].cal, outs[i].traces = f.acc[i], f.cal[i], f.traces[i]
	}

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
				a.add(outs[i].cal[ri*len(CalibrationLevels)+li])
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
	sc := newScorer(opts)
	for i := range x {
		sc.origin(x, i, s.Forecast, cal, tr)
		s.Observe(x[i])
	}
	return sc.a
}

type fleetOut struct {
	acc    [][]acc // [subset VM][resource]
	cal    [][]acc // [subset VM][resource][level]
	traces [][]Trace
}

// walkFleet runs the default model over every VM of w in time order through
// one forecast.Engine, a whole interval's samples as one batch, as the
// controller feeds it: the fleet's prior on the blend's weights then learns
// from every VM but, like each VM's own state, only from samples before each
// origin. It scores the VMs of the EveryVM subset (samples[j] is the subset's
// j-th VM), with calibration and traces. One batch a step keeps the result
// independent of scheduling.
func walkFleet(w *trace.Workload, resources []model.Resource, cfg forecast.Config, opts Options, samples []bool) fleetOut {
	e, _ := forecast.NewEngine(cfg)
	vms := make([]*forecast.VM, len(w.VMs))
	for i := range vms {
		vms[i] = e.VM(fmt.Sprintf("%d\x00%s", i, w.VMs[i].ID)) // IDs need not be unique in a trace
	}
	nsub := (len(w.VMs) + opts.EveryVM - 1) / opts.EveryVM
	out := fleetOut{acc: make([][]acc, nsub), cal: make([][]acc, nsub), traces: make([][]Trace, nsub)}
	scs := make([][]*scorer, nsub)
	for j := range nsub {
		out.cal[j] = make([]acc, len(resources)*len(CalibrationLevels))
		for _, r := range resources {
			scs[j] = append(scs[j], newScorer(opts))
			if samples[j] {
				out.traces[j] = append(out.traces[j], Trace{VM: w.VMs[j*opts.EveryVM].ID, Resource: r.String()})
			}
		}
	}
	d := make([]model.Resources, len(w.VMs))
	n := w.Len()
	for t := range n {
		for j := range nsub {
			i := j * opts.EveryVM
			for ri, r := range resources {
				var tr *Trace
				if samples[j] {
					tr = &out.traces[j][ri]
				}
				fc := func(point, upper []float32, c float64) int { return vms[i].ForecastResource(r, point, upper, c) }
				nl := len(CalibrationLevels)
				scs[j][ri].origin(series(&w.VMs[i], r), t, fc, out.cal[j][ri*nl:(ri+1)*nl], tr)
			}
		}
		for i := range w.VMs {
			var x model.Resources
			for _, r := range resources {
				x.Set(r, float64(series(&w.VMs[i], r)[t]))
			}
			d[i] = x
		}
		e.ObserveBatch(vms, d)
	}
	for j := range nsub {
		out.acc[j] = make([]acc, len(resources))
		for ri := range resources {
			out.acc[j][ri] = scs[j][ri].a
		}
	}
	return out
}

// scorer scores one model's forecasts of one series, origin by origin.
type scorer struct {
	opts             Options
	point, upper, lv []float32
	a                acc
}

func newScorer(opts Options) *scorer {
	h := opts.Horizon
	return &scorer{opts: opts, point: make([]float32, h), upper: make([]float32, h), lv: make([]float32, h),
		a: acc{step: make([]float64, h)}}
}

// origin scores the forecast fc makes before sample i of x is observed, if i
// is a scored origin. cal and tr are as for walk.
func (sc *scorer) origin(x []float32, i int, fc func(point, upper []float32, confidence float64) int, cal []acc, tr *Trace) {
	opts := sc.opts
	h := opts.Horizon
	c := float32(opts.Confidence)
	point, upper, lv, a := sc.point, sc.upper, sc.lv, &sc.a
	if !(i >= opts.Warmup && i+h <= len(x) && (i-opts.Warmup)%opts.Every == 0) {
		return
	}
	fc(point, upper, opts.Confidence)
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
		fc(point, lv, l)
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
