package forecast

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// coverage walks a Series over x and returns, per confidence, the fraction of
// actuals at or below the bound over every step, and the point MAE.
func coverage(t *testing.T, cfg Config, x []float32, warm int, confs []float64) ([]float64, float64) {
	t.Helper()
	s, err := NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := max(cfg.Horizon, 1)
	pt, up := make([]float32, h), make([]float32, h)
	hit := make([]float64, len(confs))
	var n, abs float64
	for i, v := range x {
		if i >= warm && i+h <= len(x) {
			s.Forecast(pt, nil, 0)
			for c, conf := range confs {
				s.Forecast(pt, up, conf)
				for k := range h {
					if x[i+k] <= up[k] {
						hit[c]++
					}
				}
			}
			for k := range h {
				abs += math.Abs(float64(x[i+k] - pt[k]))
			}
			n += float64(h)
		}
		s.Observe(v)
	}
	for c := range hit {
		hit[c] /= n
	}
	return hit, abs / n
}

// regimes is noise whose scale and level jump every few hundred samples: a
// bound from a fixed error distribution would not hold.
func regimes(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	lvl, sc := 0.3, 0.05
	for i := range x {
		if i%400 == 0 {
			lvl, sc = 0.1+0.6*rng.Float64(), 0.01+0.1*rng.Float64()
		}
		x[i] = float32(max(lvl+sc*rng.NormFloat64()*(1+rng.ExpFloat64()), 0))
	}
	return x
}

func TestCalibrationHoldsAcrossRegimes(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	confs := []float64{0.8, 0.9, 0.95}
	for _, model := range []string{DefaultModel, "last", "mean12"} {
		var tot [3]float64
		const runs = 8
		for range runs {
			cov, _ := coverage(t, Config{Horizon: 6, Model: model}, regimes(rng, 3000), 12, confs)
			for c := range cov {
				tot[c] += cov[c] / runs
			}
		}
		for c, want := range confs {
			if math.Abs(tot[c]-want) > 0.015 {
				t.Errorf("%s: stated %.2f, measured %.3f", model, want, tot[c])
			}
		}
	}
}

func TestUnlistedConfidenceInterpolates(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	cov, _ := coverage(t, Config{Horizon: 3, Levels: []float64{0.8, 0.9}}, regimes(rng, 20000), 12, []float64{0.85})
	if math.Abs(cov[0]-0.85) > 0.02 {
		t.Errorf("confidence 0.85 between calibrated 0.8 and 0.9 measured %.3f", cov[0])
	}
}

func TestBoundsRiseWithConfidence(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	s, _ := NewSeries(Config{})
	for _, v := range regimes(rng, 1000) {
		s.Observe(v)
	}
	pt := make([]float32, 6)
	prev := make([]float32, 6)
	for i, c := range []float64{0.5, 0.8, 0.9, 0.95, 0.99} {
		up := make([]float32, 6)
		s.Forecast(pt, up, c)
		for k := range up {
			if i > 0 && up[k] < prev[k] {
				t.Fatalf("step %d: bound at %.2f (%v) below the one at a lower confidence (%v)", k+1, c, up[k], prev[k])
			}
		}
		prev = up
	}
}

// The blend must track the better model on each kind of series: last value
// on a random walk, a robust level on bursty noise.
func TestDefaultPicksTheRightModelPerSeries(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	walk := make([]float32, 4000)
	v := 0.5
	for i := range walk {
		v += 0.02 * rng.NormFloat64()
		walk[i] = float32(v)
	}
	bursty := make([]float32, 4000)
	for i := range bursty {
		bursty[i] = float32(0.2 + 0.1*rng.ExpFloat64()*float64(rng.IntN(2)))
	}
	for _, c := range []struct {
		name string
		x    []float32
		good string
		bad  string
	}{{"random walk", walk, "last", "median24"}, {"bursty", bursty, "median24", "last"}} {
		mae := func(m string) float64 {
			_, e := coverage(t, Config{Horizon: 6, Model: m}, c.x, 12, nil)
			return e
		}
		d, good, bad := mae(DefaultModel), mae(c.good), mae(c.bad)
		if d > 1.05*good || d > 0.9*bad {
			t.Errorf("%s: default MAE %.4f, %s %.4f, %s %.4f", c.name, d, c.good, good, c.bad, bad)
		}
	}
}

func TestSeasonalJoinsTheBlendOnADailyCycle(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	x := make([]float32, 8*288)
	for i := range x {
		// Sharp daily spikes that no level model can anticipate.
		v := 0.1 + 0.01*rng.NormFloat64()
		if i%288 >= 100 && i%288 < 110 {
			v += 0.6
		}
		x[i] = float32(v)
	}
	_, withDay := coverage(t, Config{Horizon: 6}, x[:], 3*288, nil)
	_, level := coverage(t, Config{Horizon: 6, Model: "median24"}, x[:], 3*288, nil)
	// Without the seasonal models the blend is a level model (ratio ~1); the
	// spikes recur daily, so the blend, not knowing when, keeps some of both.
	if withDay > 0.65*level {
		t.Errorf("default MAE %.4f on a daily cycle, median24 %.4f: the seasonal model did not take over", withDay, level)
	}
}

// A day compressed to 60 s at 3 s steps (a lab replaying a daily pattern):
// with Config.Day set the seasonal models see the 20-sample cycle; without it
// the blend is a level model.
func TestCompressedDay(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	x := make([]float32, 10*20)
	for i := range x {
		v := 0.1 + 0.01*rng.NormFloat64()
		if i%20 >= 14 {
			v += 0.6
		}
		x[i] = float32(v)
	}
	_, day := coverage(t, Config{Step: 3, Horizon: 4, Day: 60}, x, 3*20, nil)
	_, none := coverage(t, Config{Step: 3, Horizon: 4}, x, 3*20, nil)
	if day > 0.5*none {
		t.Errorf("MAE %.4f with a 60 s day, %.4f without: the seasonal model did not take over", day, none)
	}
	if _, err := NewSeries(Config{Day: -1}); err == nil || !strings.Contains(err.Error(), "day") {
		t.Errorf("negative day: %v", err)
	}
}

func TestProbExceedIsCalibrated(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	x := regimes(rng, 30000)
	s, _ := NewSeries(Config{Horizon: 6})
	const H = 6
	// Bucket the stated probabilities and compare with how often the event
	// "some step within H exceeds x" happened.
	var stated, happened [5]float64
	var count [5]float64
	for i, v := range x {
		if i >= 100 && i+H <= len(x) {
			last := float64(s.History().Last())
			for _, thr := range []float64{last * 0.8, last, last * 1.2, last * 1.5} {
				p := s.ProbExceed(thr, H)
				ev := 0.0
				for k := range H {
					if float64(x[i+k]) > thr {
						ev = 1
					}
				}
				b := min(int(p*5), 4)
				stated[b] += p
				happened[b] += ev
				count[b]++
			}
		}
		s.Observe(v)
	}
	for b := range count {
		if count[b] < 500 {
			continue
		}
		sp, hp := stated[b]/count[b], happened[b]/count[b]
		if math.Abs(sp-hp) > 0.05 {
			t.Errorf("bucket %d: stated P %.3f, observed frequency %.3f over %v forecasts", b, sp, hp, count[b])
		}
	}
}

func TestProbExceedDecreasesInThreshold(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	s, _ := NewSeries(Config{})
	if !math.IsNaN(s.ProbExceed(0.5, 6)) {
		t.Error("ProbExceed without history is not NaN")
	}
	for _, v := range regimes(rng, 2000) {
		s.Observe(v)
	}
	prev := 2.0
	for x := -0.5; x < 2; x += 0.01 {
		p := s.ProbExceed(x, 6)
		if p > prev || p < 0 || p > 1 {
			t.Fatalf("ProbExceed(%.2f) = %v after %v", x, p, prev)
		}
		prev = p
	}
	if s.ProbExceed(-10, 6) < 0.95 || s.ProbExceed(10, 6) > 0.05 {
		t.Errorf("extremes: P(>-10) = %v, P(>10) = %v", s.ProbExceed(-10, 6), s.ProbExceed(10, 6))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{Step: -1}, {Horizon: -2}, {Levels: []float64{1.5}}, {Model: "nope"}} {
		if _, err := NewSeries(c); err == nil {
			t.Errorf("NewSeries(%+v) accepted", c)
		}
	}
}
