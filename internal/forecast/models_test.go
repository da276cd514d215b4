package forecast

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func runModel(t *testing.T, name string, x []float32, h int) (*History, Model) {
	t.Helper()
	spec, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	m := spec.New(Params{Step: 300, Horizon: h})
	hist := NewHistory(3000)
	for _, v := range x {
		hist.Push(v)
		m.Observe(hist, v)
	}
	return hist, m
}

func TestRegistry(t *testing.T) {
	names := strings.Join(Names(), ",")
	for _, want := range []string{"last", "mean12", "median24", "ewma", "holt", "seasonal", "holtwinters", "ar", DefaultModel} {
		if !strings.Contains(","+names+",", ","+want+",") {
			t.Errorf("model %q not registered (have %s)", want, names)
		}
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Lookup(nope) error = %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a duplicate name did not panic")
		}
	}()
	Register(Spec{Name: "last"})
}

func TestEveryModelForecastsAConstant(t *testing.T) {
	x := make([]float32, 700)
	for i := range x {
		x[i] = 0.37
	}
	for _, name := range Names() {
		hist, m := runModel(t, name, x, 6)
		out := make([]float32, 6)
		m.Predict(hist, out)
		for s, v := range out {
			if math.Abs(float64(v)-0.37) > 1e-3 {
				t.Errorf("%s: step %d forecast %v for a constant 0.37", name, s+1, v)
			}
		}
	}
}

func TestMeanAndMedianWindows(t *testing.T) {
	var x []float32
	for i := range 50 {
		x = append(x, float32(i%7))
	}
	hist, m := runModel(t, "mean12", x, 1)
	out := make([]float32, 1)
	m.Predict(hist, out)
	var s float64
	for _, v := range x[len(x)-12:] {
		s += float64(v)
	}
	if math.Abs(float64(out[0])-s/12) > 1e-5 {
		t.Errorf("mean12 = %v, want %v", out[0], s/12)
	}
	hist, m = runModel(t, "median24", x, 1)
	m.Predict(hist, out)
	// The last 24 of 0..6 repeating: 26..49 -> values 5,6,0..6,0..6,0..6,0 sorted.
	if out[0] != 3 {
		t.Errorf("median24 = %v, want 3", out[0])
	}
}

func TestSeasonalUsesTheWeekThenTheDay(t *testing.T) {
	day := 288
	mk := func(n int, weekly bool) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i % day)
			if weekly && (i/day)%7 == 3 {
				x[i] += 1000 // one odd day a week
			}
		}
		return x
	}
	out := make([]float32, 6)
	// Two days of history: yesterday at the same time.
	hist, m := runModel(t, "seasonal", mk(2*day, false), 6)
	m.Predict(hist, out)
	for s, v := range out {
		if v != float32(s) {
			t.Fatalf("daily: step %d = %v, want %d", s+1, v, s)
		}
	}
	// Eleven days, the odd day comes next: only the weekly lag knows.
	n := 10*day + 0
	hist, m = runModel(t, "seasonal", mk(n, true), 6)
	m.Predict(hist, out)
	if out[0] != 1000 {
		t.Fatalf("weekly: step 1 = %v, want 1000 (same time last week)", out[0])
	}
}

func TestHoltFollowsARamp(t *testing.T) {
	x := make([]float32, 300)
	for i := range x {
		x[i] = float32(i) * 0.01
	}
	hist, m := runModel(t, "holt", x, 6)
	out := make([]float32, 6)
	m.Predict(hist, out)
	// Damping and smoothing make it lag a pure ramp, but the trend is there.
	for s := 1; s < 6; s++ {
		if out[s] <= out[s-1] {
			t.Fatalf("holt on a rising ramp forecast %v: not rising", out)
		}
	}
	// ...and it lags less than a mean, which trails by half its window.
	hm, mm := runModel(t, "mean12", x, 6)
	mo := make([]float32, 6)
	mm.Predict(hm, mo)
	want := x[len(x)-1] + 0.06
	if math.Abs(float64(out[5]-want)) >= math.Abs(float64(mo[5]-want)) {
		t.Errorf("holt step 6 = %v, mean12 %v, want nearer %v", out[5], mo[5], want)
	}
}

func TestHoltWintersLearnsTheDay(t *testing.T) {
	day := 288
	x := make([]float32, 4*day)
	for i := range x {
		x[i] = float32(0.5 + 0.3*math.Sin(2*math.Pi*float64(i)/float64(day)))
	}
	hist, m := runModel(t, "holtwinters", x, 6)
	out := make([]float32, 6)
	m.Predict(hist, out)
	for s, v := range out {
		want := 0.5 + 0.3*math.Sin(2*math.Pi*float64(len(x)+s)/float64(day))
		if math.Abs(float64(v)-want) > 0.02 {
			t.Errorf("step %d = %v, want %v", s+1, v, want)
		}
	}
}

func TestARFitsAnAR1(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 3000)
	v := 0.0
	for i := range x {
		v = 0.8*v + 0.1*rng.NormFloat64()
		x[i] = float32(1 + v)
	}
	spec, _ := Lookup("ar")
	m := spec.New(Params{Step: 300, Horizon: 1})
	hist := NewHistory(4000)
	out := make([]float32, 1)
	var se, seLast float64
	n := 0
	for i, y := range x {
		if i > 500 {
			m.Predict(hist, out)
			se += math.Pow(float64(y-out[0]), 2)
			seLast += math.Pow(float64(y-hist.Last()), 2)
			n++
		}
		hist.Push(y)
		m.Observe(hist, y)
	}
	// The noise variance is 0.01; last value's error variance is 2(1-0.8)/(1-0.64)*0.01 ~ 0.011.
	if mse := se / float64(n); mse > 0.0105 {
		t.Errorf("AR one-step MSE %.5f, want near the noise variance 0.01", mse)
	}
	if se >= seLast {
		t.Errorf("AR (%.4f) no better than last value (%.4f) on an AR(1)", se, seLast)
	}
}

// mixCDF is the exact CDF of the Laplace mixture that mixMedianStep steps on.
func mixCDF(m float64, v, w *[nComp]float32, sw, b float32) float64 {
	var F float64
	for k := range v {
		z := (m - float64(v[k])) / float64(b)
		if z < 0 {
			F += float64(w[k]) * 0.5 * math.Exp(z)
		} else {
			F += float64(w[k]) * (1 - 0.5*math.Exp(-z))
		}
	}
	return F / float64(sw)
}

func TestMixMedianStep(t *testing.T) {
	var v, w [nComp]float32
	for k := range v {
		v[k], w[k] = 1, 1
	}
	const sw = nComp
	// Components that agree: the mean stays.
	if m := mixMedianStep(1, &v, &w, sw, 0.2); m != 1 {
		t.Fatalf("agreeing components: %v, want 1", m)
	}
	// One strays far: the mean (1.4) is pulled back toward the others, as
	// the median of the mixture is, by at most one scale, and not past them.
	v[cLast] = 5
	mean := float32(1 + 4.0/nComp)
	if m := mixMedianStep(mean, &v, &w, sw, 0.2); math.Abs(float64(m-(mean-0.2))) > 1e-5 {
		t.Fatalf("one stray component: %v from the mean %v, want one scale back", m, mean)
	}
	if m := mixMedianStep(mean, &v, &w, sw, 1); !(m >= 1 && m < 1.1) {
		t.Fatalf("one stray component: %v from the mean %v, want in [1, 1.1)", m, mean)
	}
	// At a scale far wider than the spread, it is the mean.
	if m := mixMedianStep(mean, &v, &w, sw, 1000); math.Abs(float64(m-mean)) > 1e-3 {
		t.Fatalf("wide scale: %v, want the mean %v", m, mean)
	}
	// Random mixtures: the step never leaves the components' range, and it
	// brings F(m) closer to 1/2 than the weighted mean had it: on average by
	// far, and in no case much further (exp is approximated, so a step from
	// a mean already near the median may overshoot it a little).
	rng := rand.New(rand.NewPCG(3, 5))
	var sum0, sum1 float64
	for i := range 1000 {
		var sw, sv float32
		lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
		for k := range v {
			v[k] = float32(rng.NormFloat64())
			w[k] = 0
			if rng.IntN(3) > 0 {
				w[k] = float32(rng.Float64())
				lo, hi = min(lo, v[k]), max(hi, v[k])
			}
			sw += w[k]
			sv += w[k] * v[k]
		}
		if sw == 0 {
			continue
		}
		b := float32(0.05 + rng.Float64())
		mean := sv / sw
		m := mixMedianStep(mean, &v, &w, sw, b)
		if m < lo || m > hi || math.Abs(float64(m-mean)) > float64(b)*(1+1e-6) {
			t.Fatalf("case %d: %v from %v, outside the components' [%v, %v] or beyond the scale %v", i, m, mean, lo, hi, b)
		}
		d0, d1 := math.Abs(mixCDF(float64(mean), &v, &w, sw, b)-0.5), math.Abs(mixCDF(float64(m), &v, &w, sw, b)-0.5)
		if d1 > d0+0.03 {
			t.Fatalf("case %d: |F - 1/2| %v at the step, %v at the mean", i, d1, d0)
		}
		sum0 += d0
		sum1 += d1
	}
	if sum1 > sum0/2 {
		t.Fatalf("mean |F - 1/2| %v after the step, %v at the mean", sum1/1000, sum0/1000)
	}
	t.Logf("mean |F - 1/2| %v after the step, %v at the mean", sum1/1000, sum0/1000)
}
