package forecast

import (
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// Config sets up a Series or an Engine. The zero value gives 5-minute steps,
// a 6-step horizon, a week of 16-bit history and bounds at 0.5, 0.8, 0.9,
// 0.95, 0.99.
type Config struct {
	Step     float64   // seconds between samples; default 300
	Horizon  int       // longest forecast in steps; default 6
	Capacity int       // history samples kept per series (at least 128); default a week plus 64
	Levels   []float64 // confidences whose bounds are calibrated; others interpolate
	Model    string    // registered model name; default "default"
	// Day is the length of the daily cycle in seconds (default 86400); the weekly
	// cycle is seven of them. A lab that replays a day in minutes sets it so the
	// seasonal models see the compressed cycle.
	Day float64
	// LearnRate is the calibration step in units of the error scale. Larger
	// converges faster after a change, smaller gives steadier bounds.
	LearnRate float64
	// HistoryBits is 16 (the default) to keep history samples as bfloat16, or
	// 32 for float32. 16 halves the memory of the rings, which at fleet scale
	// are most of it; see History for the precision.
	HistoryBits int
}

// Defaults.
const (
	DefaultStep      = 300
	DefaultHorizon   = 6
	DefaultLearnRate = 0.05
)

// DefaultLevels are the calibrated confidences when Config.Levels is empty.
var DefaultLevels = []float64{0.5, 0.8, 0.9, 0.95, 0.99}

// probLevels are the quantiles of the horizon maximum kept for ProbExceed;
// probabilities beyond them saturate at 0.02 and 0.98.
var probLevels = [...]float32{0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98}

// shared is the per-Config part of every Series, held once.
type shared struct {
	params Params
	spec   Spec
	levels []float32
	lr     float32
	cap    int
	half   bool  // 16-bit history
	bsz    int32 // samples per peak block
	nb     int32 // peak blocks: enough for a day in any alignment
	off    int   // where the calibration starts in a Series' slab
	pool   *pool // the fleet's prior on the blend's weights; nil outside an Engine
	// meanOnly makes the blend forecast its weighted mean, as the engine did
	// before the step toward the mixture's median: tests use it to rebuild
	// what an older engine saved.
	meanOnly bool
	steps    []trackStep
	psteps   [len(probLevels)]trackStep
}

func (c Config) shared() (*shared, error) {
	if c.Step == 0 {
		c.Step = DefaultStep
	}
	if c.Horizon == 0 {
		c.Horizon = DefaultHorizon
	}
	if c.Step < 0 || math.IsNaN(c.Step) {
		return nil, fmt.Errorf("forecast: step %v must be positive", c.Step)
	}
	if c.Day < 0 || math.IsNaN(c.Day) || math.IsInf(c.Day, 0) {
		return nil, fmt.Errorf("forecast: day %v seconds must be positive", c.Day)
	}
	if c.Horizon < 0 || c.Horizon > 1024 {
		return nil, fmt.Errorf("forecast: horizon %d steps out of 1..1024", c.Horizon)
	}
	p := Params{Step: c.Step, Horizon: c.Horizon, Day: c.Day}
	if c.Capacity == 0 {
		c.Capacity = max(p.week(), p.day(), 0) + 64
	}
	if c.Model == "" {
		c.Model = DefaultModel
	}
	spec, err := Lookup(c.Model)
	if err != nil {
		return nil, err
	}
	if c.LearnRate == 0 {
		c.LearnRate = DefaultLearnRate
	}
	ls := c.Levels
	if len(ls) == 0 {
		ls = DefaultLevels
	}
	if c.Capacity < 0 {
		return nil, fmt.Errorf("forecast: capacity %d samples is negative", c.Capacity)
	}
	switch c.HistoryBits {
	case 0, 16, 32:
	default:
		return nil, fmt.Errorf("forecast: history bits %d: want 16 or 32", c.HistoryBits)
	}
	sh := &shared{params: p, spec: spec, lr: float32(c.LearnRate), cap: max(c.Capacity, minHistory), half: c.HistoryBits != 32}
	// Forecast's Peak reads the last week (the longest cycle the engine models):
	// blocks of sqrt(week) samples make that a scan of under one block plus about
	// sqrt(week) block maxima.
	if d := max(p.week(), p.day()); d > 0 {
		sh.bsz = int32(math.Ceil(math.Sqrt(float64(d))))
		sh.nb = int32((d+int(sh.bsz)-1)/int(sh.bsz) + 1)
	}
	for _, l := range ls {
		if !(l > 0 && l < 1) {
			return nil, fmt.Errorf("forecast: confidence %v out of (0,1)", l)
		}
		sh.levels = append(sh.levels, float32(l))
	}
	slices.Sort(sh.levels)
	sh.levels = slices.Compact(sh.levels)
	if spec.Name == DefaultModel {
		sh.off = blendSlabLen(c.Horizon)
	}
	for _, l := range sh.levels {
		sh.steps = append(sh.steps, trackStep{up: sh.lr * l, down: sh.lr * (1 - l)})
	}
	for i, l := range probLevels {
		sh.psteps[i] = trackStep{up: sh.lr * l, down: sh.lr * (1 - l)}
	}
	return sh, nil
}

// Series is one VM-resource: its history, its model and the calibration of the
// model's bounds. Not safe for concurrent use; the Engine locks around it.
//
// The default model is embedded and its arrays share one slab with the
// calibration's, so a Series is three allocations: itself, the slab, the ring.
type Series struct {
	sh    *shared
	hist  History
	model Model // nil: the embedded default
	def   blend
	row   int32   // newest origin mod h
	scale float32 // decayed mean |error| over all steps
	wsum  float32 // its decayed weight
	res   uint8   // its resource, for the Engine's prior (fits the padding)
	// slab holds the default model's arrays (if it is the model), then:
	// pend[row*h+s], the forecast for step s+1 made at origin row (mod h), and
	// psc[row], the error scale it was made with, kept until scored;
	// q[s*levels+l], the tracked quantile of error/scale at level l, step s+1;
	// qmax[s*probLevels+l], that of (max actual - max forecast)/scale over
	// steps 1..s+1. Offsets are in shared: one slice header, not five.
	slab []float32
}

// parts returns the calibration's views of the slab.
func (s *Series) parts() (pend, psc, q, qmax []float32) {
	sh := s.sh
	sl := s.slab[sh.off:]
	h := sh.params.Horizon
	pend, sl = sl[:h*h], sl[h*h:]
	psc, sl = sl[:h], sl[h:]
	nl := len(sh.levels) * h
	return pend, psc, sl[:nl], sl[nl : nl+len(probLevels)*h]
}

const scaleDecay = 0.97

// NewSeries returns a Series for cfg.
func NewSeries(cfg Config) (*Series, error) {
	sh, err := cfg.shared()
	if err != nil {
		return nil, err
	}
	return newSeries(sh, nil), nil
}

// newSeries makes a Series; ring, if not nil, is its full-capacity history
// buffer (sh.ringWords() long).
func newSeries(sh *shared, ring []float32) *Series {
	h := sh.params.Horizon
	s := &Series{sh: sh, row: -1}
	if ring != nil {
		s.hist.max, s.hist.half, s.hist.bsz, s.hist.nb = sh.cap, sh.half, sh.bsz, sh.nb
		s.hist.setBuf(ring, sh.cap)
	} else {
		s.hist.init(sh.cap, sh.half, int(sh.bsz), int(sh.nb))
	}
	nl, np := len(sh.levels), len(probLevels)
	n := h*h + h + nl*h + np*h
	isDef := sh.spec.Name == DefaultModel
	if isDef {
		n += blendSlabLen(h)
	}
	s.slab = make([]float32, n)
	if isDef {
		s.def.init(sh.params, s.slab[:sh.off])
	} else {
		s.model = sh.spec.New(sh.params)
	}
	_, _, q, qmax := s.parts()
	for si := range h {
		for i, l := range sh.levels {
			q[si*nl+i] = laplaceQuantile(l)
		}
		for i, l := range probLevels {
			qmax[si*np+i] = laplaceQuantile(l)
		}
	}
	return s
}

// laplaceQuantile is the l-quantile of a Laplace error with mean absolute
// deviation 1: the prior for a VM with no errors yet.
func laplaceQuantile(l float32) float32 {
	if l >= 0.5 {
		return float32(-math.Log(2 * (1 - float64(l))))
	}
	return float32(math.Log(2 * float64(l)))
}

// History exposes the series' samples (read-only use).
func (s *Series) History() *History { return &s.hist }

// Peak is the largest of the newest n samples held (all of them when n <= 0),
// or 0 without history: what the VM has shown it can reach recently.
func (s *Series) Peak(n int) float32 { return s.hist.Peak(n) }

// Observe adds the next sample and updates model and calibration.
func (s *Series) Observe(x float32) { s.observe(x, nil) }

// observe is Observe that adds the blend's relative losses into acc, if not
// nil, for the Engine's prior.
func (s *Series) observe(x float32, acc *poolAcc) {
	h := s.sh.params.Horizon
	pend, psc, qs, qmax := s.parts()
	s.hist.push(x)

	// Score the forecasts made at origins t-1..t-h (rows row, row-1, ...).
	n := min(int64(h), s.hist.total-1)
	r := int(s.row)
	var esum float32
	ma := x // max of the actuals of the last k samples
	nl := len(s.sh.levels)
	for si := range int(n) {
		row := pend[r*h : r*h+h]
		e := x - row[si]
		esum += abs32(e)
		sc := psc[r]
		z := e / sc
		q := qs[si*nl : si*nl+nl]
		for l, a := range s.sh.steps {
			q[l] = track(q[l], z, a)
		}
		// The maximum over steps 1..k of origin t-k ends at this sample.
		if si > 0 {
			ma = max(ma, s.hist.At(si))
		}
		mh := row[0]
		for _, v := range row[1 : si+1] {
			mh = max(mh, v)
		}
		zm := (ma - mh) / sc
		qm := qmax[si*len(probLevels) : (si+1)*len(probLevels)]
		for l, a := range &s.sh.psteps {
			qm[l] = track(qm[l], zm, a)
		}
		if r--; r < 0 {
			r = h - 1
		}
	}
	if n > 0 {
		s.scale = scaleDecay*s.scale + esum/float32(n)
		s.wsum = scaleDecay*s.wsum + 1
	}

	if s.row++; int(s.row) >= h {
		s.row = 0
	}
	row := pend[int(s.row)*h : int(s.row)*h+h]
	if s.model == nil {
		s.def.Observe(&s.hist, x)
		sc := s.scaleNow(x)
		psc[s.row] = sc
		if s.sh.meanOnly {
			sc = 0
		}
		s.def.predictWith(&s.hist, row, s.prior(), acc, sc)
	} else {
		s.model.Observe(&s.hist, x)
		s.model.Predict(&s.hist, row)
		psc[s.row] = s.scaleNow(x)
	}
}

// trackStep is a quantile tracker's update for one level: up after a miss,
// down after a hit, so that misses occur a fraction 1-level of the time.
type trackStep struct{ up, down float32 }

// track is branch-free: at 400,000 series a mispredicted branch per level
// costs more than the arithmetic.
func track(q, z float32, a trackStep) float32 {
	miss := float32(math.Float32bits(q-z) >> 31) // 1 when z > q
	return q - a.down + miss*(a.up+a.down)
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// scaleNow is the current error scale: the decayed mean absolute error, or a
// fraction of the level while there are no errors yet. The floor keeps a flat
// series from dividing by zero.
func (s *Series) scaleNow(level float32) float32 {
	var sc float32
	if s.wsum > 0.5 {
		sc = s.scale / s.wsum
	} else {
		sc = 0.1 * abs32(level)
	}
	return max(sc, 1e-6*abs32(level)+1e-9)
}

// Len is the number of samples observed.
func (s *Series) Len() int64 { return s.hist.total }

// Forecast writes the point forecast and the upper bound at confidence for
// steps 1..len(point) (at most the configured horizon) and returns the number
// of steps written. Confidences between calibrated levels interpolate.
func (s *Series) Forecast(point, upper []float32, confidence float64) int {
	h := s.sh.params.Horizon
	n := min(len(point), h)
	if s.hist.total == 0 {
		return 0
	}
	pend, psc, _, _ := s.parts()
	r := int(s.row)
	row := pend[r*h:]
	copy(point[:n], row[:n])
	if upper == nil {
		return n
	}
	for si := range n {
		upper[si] = row[si] + psc[r]*s.quantile(si, float32(confidence))
	}
	return n
}

func (s *Series) quantile(si int, c float32) float32 {
	ls := s.sh.levels
	_, _, qs, _ := s.parts()
	q := qs[si*len(ls) : (si+1)*len(ls)]
	i, found := slices.BinarySearch(ls, c)
	switch {
	case found:
		return q[i]
	case i == 0:
		return q[0]
	case i == len(ls):
		return q[i-1]
	}
	a, b := q[i-1], q[i]
	return a + (b-a)*(c-ls[i-1])/(ls[i]-ls[i-1])
}

// ProbExceed is the probability that the series exceeds x at some step within
// the next steps, from the calibrated quantiles of the horizon maximum.
// Without history it returns NaN.
func (s *Series) ProbExceed(x float64, steps int) float64 {
	h := s.sh.params.Horizon
	if s.hist.total == 0 || steps < 1 {
		return math.NaN()
	}
	si := min(steps, h) - 1
	pend, psc, _, qmax := s.parts()
	r := int(s.row)
	row := pend[r*h:]
	mh := row[0]
	for j := 1; j <= si; j++ {
		mh = max(mh, row[j])
	}
	z := (float32(x) - mh) / psc[r]
	// Quantiles are tracked independently; a running max makes them monotone.
	prevQ, prevL := float32(math.Inf(-1)), float32(0)
	qm := qmax[si*len(probLevels):]
	for l, lv := range probLevels {
		q := max(qm[l], prevQ)
		if z < q {
			if l == 0 {
				return 1 - float64(lv)
			}
			f := prevL + (lv-prevL)*(z-prevQ)/(q-prevQ)
			return 1 - float64(f)
		}
		prevQ, prevL = q, lv
	}
	return 1 - float64(probLevels[len(probLevels)-1])
}

// clone deep-copies a Series of the default model, taking its ring from
// arena if given. Benchmarks use it to build a large fleet in steady state.
func (s *Series) clone(arena *ringArena) *Series {
	c := *s
	buf := slices.Clone(s.hist.buf)
	if s.hist.size == s.hist.max && arena != nil {
		buf = arena.get()
		copy(buf, s.hist.buf)
	}
	c.hist.setBuf(buf, s.hist.size)
	c.slab = slices.Clone(s.slab)
	c.def.slab = c.slab[:s.sh.off]
	return &c
}

// ringWords is the length of a full ring from the arena, in float32 words.
func (sh *shared) ringWords() int { return ringWords(sh.cap, sh.half, int(sh.nb)) }

// Bytes is the memory of the series: struct, slab and history.
func (s *Series) Bytes() int {
	return int(unsafe.Sizeof(*s)) + s.hist.Bytes() + 4*cap(s.slab)
}
