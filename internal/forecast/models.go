package forecast

import (
	"math"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
)

func fill(out []float32, v float32) {
	for i := range out {
		out[i] = v
	}
}

type lastModel struct{}

func (lastModel) Observe(*History, float32)         {}
func (lastModel) Predict(h *History, out []float32) { fill(out, h.Last()) }

// mean keeps a running sum over the last k samples.
type mean struct {
	k   int
	sum float64
	age int
}

func newMean(k int) *mean { return &mean{k: k} }

func (m *mean) Observe(h *History, x float32) {
	m.sum += float64(x)
	if h.Len() > m.k {
		m.sum -= float64(h.At(m.k))
	}
	// Re-add from scratch now and then so rounding cannot drift.
	if m.age++; m.age >= 4096 {
		m.age = 0
		m.sum = 0
		for i := range min(m.k, h.Len()) {
			m.sum += float64(h.At(i))
		}
	}
}

func (m *mean) value(h *History) float32 {
	n := min(m.k, h.Len())
	if n == 0 {
		return 0
	}
	return float32(m.sum / float64(n))
}

func (m *mean) Predict(h *History, out []float32) { fill(out, m.value(h)) }

// window holds the last k samples sorted, so that any quantile of them is a
// lookup and an update is two binary searches and two short memmoves.
type window struct {
	v []float32
	k int
}

func newWindow(k int) window { return window{v: make([]float32, 0, k), k: k} }

func (w *window) observe(h *History, x float32) { w.v = w.v[:winObserve(w.v, h, w.k, x)] }

func (w *window) median() float32 { return medianOf(w.v) }

// search returns the first index with v[i] >= x. It is branch-free (the
// compiler turns the if into a conditional move): the comparisons are
// unpredictable, and a mispredicted branch costs more than the whole step.
func search(v []float32, x float32) int {
	n := len(v)
	if n == 0 {
		return 0
	}
	base := 0
	for n > 1 {
		half := n >> 1
		if v[base+half] < x {
			base += half
		}
		n -= half
	}
	if v[base] < x {
		base++
	}
	return base
}

type median struct{ w window }

func newMedian(k int) *median                       { return &median{w: newWindow(k)} }
func (m *median) Observe(h *History, x float32)     { m.w.observe(h, x) }
func (m *median) Predict(_ *History, out []float32) { fill(out, m.w.median()) }

type ewma struct {
	alpha float32
	v     float32
	init  bool
}

func (e *ewma) Observe(_ *History, x float32) {
	if !e.init {
		e.v, e.init = x, true
		return
	}
	e.v += e.alpha * (x - e.v)
}
func (e *ewma) Predict(_ *History, out []float32) { fill(out, e.v) }

// holt is Holt's linear method with a damped trend; damping keeps a burst from
// being extrapolated for the whole horizon.
type holt struct {
	alpha, beta, phi float32
	l, b             float32
	init             bool
}

func newHolt() *holt { return &holt{alpha: 0.3, beta: 0.05, phi: 0.9} }

func (m *holt) Observe(_ *History, x float32) {
	if !m.init {
		m.l, m.init = x, true
		return
	}
	prev := m.l
	m.l = m.alpha*x + (1-m.alpha)*(m.l+m.phi*m.b)
	m.b = m.beta*(m.l-prev) + (1-m.beta)*m.phi*m.b
}

func (m *holt) Predict(_ *History, out []float32) {
	d := float32(0)
	p := float32(1)
	for i := range out {
		p *= m.phi
		d += p
		out[i] = m.l + d*m.b
	}
}

// seasonal is the seasonal naive forecast; the weekly cycle is used once a
// week of history is held, else the daily one, else the last value.
type seasonal struct{ day, week int }

func (s *seasonal) Observe(*History, float32) {}

func (s *seasonal) Predict(h *History, out []float32) {
	p := 0
	switch {
	case s.week > len(out) && h.Len() >= s.week:
		p = s.week
	case s.day > len(out) && h.Len() >= s.day:
		p = s.day
	default:
		fill(out, h.Last())
		return
	}
	for i := range out {
		out[i] = h.At(p - 1 - i)
	}
}

// holtWinters is additive Holt-Winters on a daily season. Its season needs a
// day of history to initialise; until then it is the damped Holt model.
type holtWinters struct {
	holt
	gamma  float32
	period int
	season []float32 // by phase; nil until a period has been seen
}

func newHoltWinters(period int) *holtWinters {
	return &holtWinters{holt: holt{alpha: 0.2, beta: 0.02, phi: 0.95}, gamma: 0.1, period: period}
}

func (m *holtWinters) Observe(h *History, x float32) {
	t := int(h.Total() - 1)
	if m.season == nil {
		m.holt.Observe(h, x)
		if m.period > 0 && h.Len() == m.period && h.Total() == int64(m.period) {
			var s float64
			for i := range m.period {
				s += float64(h.At(i))
			}
			mu := float32(s / float64(m.period))
			m.season = make([]float32, m.period)
			for i := range m.period {
				m.season[(t-i)%m.period] = h.At(i) - mu
			}
			m.l, m.b = mu, 0
		}
		return
	}
	ph := t % m.period
	prev := m.l
	m.l = m.alpha*(x-m.season[ph]) + (1-m.alpha)*(m.l+m.phi*m.b)
	m.b = m.beta*(m.l-prev) + (1-m.beta)*m.phi*m.b
	m.season[ph] = m.gamma*(x-m.l) + (1-m.gamma)*m.season[ph]
}

func (m *holtWinters) Predict(h *History, out []float32) {
	m.holt.Predict(h, out)
	if m.season == nil {
		return
	}
	t := int(h.Total() - 1)
	for i := range out {
		out[i] += m.season[(t+1+i)%m.period]
	}
}

// ar is an AR(arP) model with intercept, fitted by exponentially weighted least
// squares. The normal equations are updated in O(p²) per sample and solved
// (Cholesky, gonum LAPACK) every arRefit samples, never re-fitted from the
// history. Forecasts are iterated and clamped to the recently seen range, since
// an unstable fit must not forecast demand that was never observed.
const (
	arP      = 6
	arN      = arP + 1
	arRefit  = 12
	arLambda = 0.995
)

type ar struct {
	s      [arN * (arN + 1) / 2]float64 // upper triangle of the weighted X'X
	b      [arN]float64                 // weighted X'y
	coef   [arN]float32
	n      int32
	fitted bool
	lo, hi float32
}

func newAR() *ar { return &ar{} }

func triIndex(i, j int) int { return i*arN - i*(i-1)/2 + (j - i) } // i <= j

func (m *ar) Observe(h *History, x float32) {
	if h.Total() == 1 {
		m.lo, m.hi = x, x
	}
	m.hi = max(x, m.hi-(m.hi-x)/128)
	m.lo = min(x, m.lo+(x-m.lo)/128)
	if h.Len() <= arP {
		return
	}
	var f [arN]float64
	f[0] = 1
	for i := 1; i < arN; i++ {
		f[i] = float64(h.At(i))
	}
	y := float64(x)
	k := 0
	for i := range arN {
		m.b[i] = arLambda*m.b[i] + f[i]*y
		for j := i; j < arN; j++ {
			m.s[k] = arLambda*m.s[k] + f[i]*f[j]
			k++
		}
	}
	m.n++
	if m.n >= 3*arN && m.n%arRefit == 0 {
		m.fit()
	}
}

var arScratch = sync.Pool{New: func() any { return new([arN*arN + arN]float64) }}

func (m *ar) fit() {
	buf := arScratch.Get().(*[arN*arN + arN]float64)
	defer arScratch.Put(buf)
	a := buf[:arN*arN]
	for i := range arN {
		for j := i; j < arN; j++ {
			a[i*arN+j] = m.s[triIndex(i, j)]
		}
		// A small ridge keeps a constant series (singular X'X) solvable.
		a[i*arN+i] += 1e-4*a[i*arN+i] + 1e-9
	}
	rhs := buf[arN*arN:]
	copy(rhs, m.b[:])
	t, ok := lapack64.Potrf(blas64.Symmetric{N: arN, Stride: arN, Data: a, Uplo: blas.Upper})
	if !ok {
		return
	}
	lapack64.Potrs(t, blas64.General{Rows: arN, Cols: 1, Stride: 1, Data: rhs})
	for i, v := range rhs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		m.coef[i] = float32(v)
	}
	m.fitted = true
}

func (m *ar) Predict(h *History, out []float32) {
	if !m.fitted || h.Len() < arP {
		fill(out, h.Last())
		return
	}
	var lag [arP + 16]float32 // newest last
	for i := range arP {
		lag[arP-1-i] = h.At(i)
	}
	n := arP
	for s := range out {
		v := m.coef[0]
		for i := 1; i < arN; i++ {
			v += m.coef[i] * lag[n-i]
		}
		v = min(max(v, m.lo), m.hi)
		out[s] = v
		if n < len(lag) {
			lag[n] = v
			n++
		} else {
			copy(lag[:], lag[1:])
			lag[len(lag)-1] = v
		}
	}
}
