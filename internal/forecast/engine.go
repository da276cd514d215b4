package forecast

import (
	"math"
	"runtime"
	"sync"

	"github.com/headroom/headroom/internal/model"
)

// Engine keeps a Series per VM and resource. See the package comment for the
// concurrency contract.
type Engine struct {
	sh    *shared
	mu    sync.RWMutex
	ids   map[string]*VM
	rings *ringArena
}

// VM is one VM's forecasting state. A *VM stays valid until Remove; callers that
// observe every interval should keep it rather than look the ID up each time.
// After Remove it ignores observations and forecasts nothing.
type VM struct {
	ID      string
	sh      *shared
	rings   *ringArena
	mu      sync.Mutex
	res     [4]*Series // by model.Resource; nil until the resource is first observed
	removed bool
}

// NewEngine returns an empty Engine.
func NewEngine(cfg Config) (*Engine, error) {
	sh, err := cfg.shared()
	if err != nil {
		return nil, err
	}
	if sh.spec.Name == DefaultModel {
		sh.pool = newPool(sh.params)
	}
	return &Engine{sh: sh, ids: map[string]*VM{}, rings: &ringArena{size: sh.ringWords()}}, nil
}

// Horizon is the longest forecast in steps.
func (e *Engine) Horizon() int { return e.sh.params.Horizon }

// VM returns the VM with this ID, creating it if new.
func (e *Engine) VM(id string) *VM {
	e.mu.RLock()
	v := e.ids[id]
	e.mu.RUnlock()
	if v != nil {
		return v
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v = e.ids[id]; v == nil {
		v = &VM{ID: id, sh: e.sh, rings: e.rings}
		e.ids[id] = v
	}
	return v
}

// Lookup returns the VM with this ID, or nil.
func (e *Engine) Lookup(id string) *VM {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.ids[id]
}

// Remove forgets a VM and recycles its history rings.
func (e *Engine) Remove(id string) {
	e.mu.Lock()
	v := e.ids[id]
	delete(e.ids, id)
	e.mu.Unlock()
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.removed = true
	for r, s := range v.res {
		if s != nil {
			e.rings.put(s.hist.buf)
			v.res[r] = nil
		}
	}
}

// Len is the number of VMs.
func (e *Engine) Len() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.ids)
}

// Observe adds one sample of one resource of a VM.
func (e *Engine) Observe(id string, r model.Resource, x float64) { e.VM(id).Observe(r, x) }

// Forecast returns the VM's forecast; ok is false for an unknown VM.
func (e *Engine) Forecast(id string, steps int, confidence float64) (f model.ResourceForecast, ok bool) {
	v := e.Lookup(id)
	if v == nil {
		return f, false
	}
	return v.Forecast(steps, confidence), true
}

// ProbExceed is P(demand of r > x at some step within steps) for the VM, NaN
// when the VM or resource has no history.
func (e *Engine) ProbExceed(id string, r model.Resource, x float64, steps int) float64 {
	v := e.Lookup(id)
	if v == nil {
		return math.NaN()
	}
	return v.ProbExceed(r, x, steps)
}

// Observe adds one sample of resource r.
func (v *VM) Observe(r model.Resource, x float64) {
	v.mu.Lock()
	if !v.removed {
		v.series(r).Observe(float32(x))
	}
	v.mu.Unlock()
}

// series returns r's Series, creating it with a ring from the arena.
func (v *VM) series(r model.Resource) *Series {
	s := v.res[r]
	if s == nil {
		s = newSeries(v.sh, v.rings.get())
		s.res = uint8(r)
		v.res[r] = s
	}
	return s
}

// ObserveAll adds one sample of every resource under one lock.
func (v *VM) ObserveAll(d model.Resources) { v.observeAll(d, nil) }

// observeAll is ObserveAll that adds each series' relative losses into
// acc[r], if acc is not nil, and reports whether the VM took the sample.
func (v *VM) observeAll(d model.Resources, acc *[4]poolAcc) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.removed {
		return false
	}
	for _, r := range model.AllResources {
		var a *poolAcc
		if acc != nil {
			a = &acc[r]
		}
		v.series(r).observe(float32(d.Get(r)), a)
	}
	return true
}

// Forecast returns up to steps steps (at most the engine's horizon) of point
// forecasts and upper bounds at confidence. Resources never observed have nil
// predictions and zero bounds.
func (v *VM) Forecast(steps int, confidence float64) model.ResourceForecast {
	var f model.ResourceForecast
	v.AppendForecast(&f, steps, confidence)
	return f
}

// AppendForecast is Forecast into dst, reusing the capacity of dst's slices:
// a controller that forecasts every VM every cycle keeps one
// ResourceForecast per VM and makes no garbage (at 100,000 VMs Forecast's
// slices are ~40 MB a cycle). Every field of dst is overwritten.
func (v *VM) AppendForecast(dst *model.ResourceForecast, steps int, confidence float64) {
	steps = min(max(steps, 0), v.sh.params.Horizon)
	dst.VMInstanceID = v.ID
	dst.Step = v.sh.params.Step
	dst.Confidence = confidence
	dst.Peak = model.Resources{}
	dst.Upper = resize(dst.Upper, steps)
	clear(dst.Upper)
	var pt, up [64]float32
	p, u := pt[:], up[:]
	if steps > len(pt) {
		p, u = make([]float32, steps), make([]float32, steps)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range model.AllResources {
		var out *[]float64
		switch r {
		case model.CPU:
			out = &dst.PredictedCPU
		case model.Mem:
			out = &dst.PredictedMemory
		case model.Net:
			out = &dst.PredictedNetworkIO
		default:
			out = &dst.PredictedDiskIO
		}
		s := v.res[r]
		if s == nil {
			*out = nil
			continue
		}
		n := s.Forecast(p[:steps], u[:steps], confidence)
		// The peak of the last week (all history when the step has no week): a
		// week is the longest cycle the engine models, and a burst that recurs
		// weekly (a backup, a batch job) has been quiet for days before it returns.
		dst.Peak.Set(r, float64(s.Peak(v.sh.params.week())))
		o := resize(*out, n)
		for i := range n {
			o[i] = float64(p[i])
			dst.Upper[i].Set(r, float64(u[i]))
		}
		*out = o
	}
}

// resize is s with length n, reusing its array when it is large enough;
// never nil, as Forecast's fresh slices never were.
func resize[T any](s []T, n int) []T {
	if s != nil && cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// ForecastResource is Forecast for one resource into the caller's slices:
// point forecasts and upper bounds at confidence for up to len(point) steps;
// upper may be nil. It returns the steps written, 0 when r has no history.
func (v *VM) ForecastResource(r model.Resource, point, upper []float32, confidence float64) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.res[r]
	if s == nil {
		return 0
	}
	return s.Forecast(point, upper, confidence)
}

// ProbExceed is P(demand of r > x at some step within steps), steps at most
// the horizon; NaN when r has no history.
func (v *VM) ProbExceed(r model.Resource, x float64, steps int) float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.res[r]
	if s == nil {
		return math.NaN()
	}
	return s.ProbExceed(x, steps)
}

// ObserveBatch adds one sample of every resource for each VM: d[i] for vms[i].
// It is ObserveAll in a loop, except that it touches the next VMs' state
// before working on the current one, so their cache misses overlap with the
// arithmetic instead of following it: at fleet scale an update waits on
// memory more than it computes. A collector that has a whole interval's
// samples should use it.
//
// It is also where the fleet's prior on the blend's weights is learnt (see
// pool): the batch's series add their errors to it, and it is published once
// the batch is done, so no forecast of this batch uses this batch's samples.
// A collector that observes one interval in concurrent parts uses
// ObserveInto and Learn instead, so that the interval is still one batch.
func (e *Engine) ObserveBatch(vms []*VM, d []model.Resources) {
	var errs Errors
	e.ObserveInto(&errs, vms, d)
	e.Learn(&errs)
}

// Errors is what observed samples add to the fleet's prior, held back until
// Learn. The zero value is empty; one Errors is not for concurrent use.
type Errors struct {
	acc [4]poolAcc
	m   int
}

// ObserveInto is ObserveBatch with the batch's errors added to errs instead of
// the fleet's prior. Concurrent calls on disjoint VMs, each with its own
// Errors, followed by one Learn of them all, learn as one ObserveBatch of the
// whole interval would, whatever the order the parts finish in.
func (e *Engine) ObserveInto(errs *Errors, vms []*VM, d []model.Resources) {
	const ahead = 2
	var acc float32
	var pacc *[4]poolAcc
	if e.sh.pool != nil {
		pacc = &errs.acc
	}
	m := 0
	for i := range min(ahead, len(vms)) {
		acc += touch(vms[i])
	}
	for i, v := range vms[:min(len(vms), len(d))] {
		if i+ahead < len(vms) {
			acc += touch(vms[i+ahead])
		}
		if v.observeAll(d[i], pacc) {
			m++
		}
	}
	errs.m += m
	// Use the loads so that the compiler keeps them; the branch is never taken
	// in practice and races with nothing.
	if acc == 1e-38 {
		runtime.KeepAlive(vms)
	}
}

// Learn adds the errors of one interval's batches to the fleet's prior, as
// one batch, and publishes it.
func (e *Engine) Learn(parts ...*Errors) {
	pl := e.sh.pool
	if pl == nil {
		return
	}
	var all Errors
	for _, p := range parts {
		for r := range all.acc {
			all.acc[r].plus(&p.acc[r])
		}
		all.m += p.m
	}
	if all.m == 0 {
		return
	}
	n := e.Len()
	for r := range all.acc {
		pl.merge(r, &all.acc[r], all.m, n)
	}
}

// touch loads one word per cache line of a VM's series state and the head of
// their rings. It skips a VM whose lock is taken rather than wait: it only
// warms the cache.
func touch(v *VM) float32 {
	if !v.mu.TryLock() {
		return 0
	}
	defer v.mu.Unlock()
	var s float32
	for _, r := range v.res {
		if r == nil || r.hist.Len() == 0 {
			continue
		}
		for i := 0; i < len(r.slab); i += 16 {
			s += r.slab[i]
		}
		// The lines the next sample writes: the ring at head, the exact copy
		// (16-bit) and the peak block.
		h := &r.hist
		if h.half {
			s += float32(h.b16[h.head]) + h.exact()[h.total&(exactN-1)]
		} else {
			s += h.buf[h.head]
		}
		if h.bsz > 0 {
			s += h.block(h.size + int(h.bslot))
		}
		// The seasonal models read a day and a week back.
		if d := int(r.def.day); d > 0 && d < h.Len() {
			s += h.At(d)
		}
		if w := int(r.def.week); w > 0 && w < h.Len() {
			s += h.At(w)
		}
	}
	return s
}
