package forecast

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// Forecast carries each resource's largest sample of the last week (the longest
// cycle the engine models): a burst seven and a half days ago has aged out, one
// 36 hours ago has not. (The values are exact in bfloat16, so the test holds for
// 16-bit history too.)
func TestForecastPeakIsTheLastWeeksLargestSample(t *testing.T) {
	e, err := NewEngine(Config{Step: 300, Horizon: 6})
	if err != nil {
		t.Fatal(err)
	}
	v := e.VM("a")
	const n = 2200 // a week is 2016 samples at 5 minutes
	for k := range n {
		d := model.Resources{CPU: 100, Mem: 50}
		switch k {
		case n - 2160: // 7.5 days ago
			d.CPU = 5120
		case n - 432: // 36 h ago
			d.CPU, d.Mem = 3072, 700
		}
		v.ObserveAll(d)
	}
	f := v.Forecast(6, 0.9)
	if f.Peak.CPU != 3072 || f.Peak.Mem != 700 || f.Peak.Net != 0 {
		t.Errorf("peak %+v: want CPU 3072, memory 700, network 0", f.Peak)
	}
}

// Peak from block maxima is the scan's result exactly: random lengths, days,
// windows and values (negative, zero, signed zeros; NaN in the bare ring), both widths, a
// ring that grows, a full one from the arena, and one loaded from a snapshot.
func TestPeakBlocksMatchScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for trial := range 60 {
		bits := []int{16, 32}[trial%2]
		day := 300 * (1 + rng.IntN(400))
		cfg := Config{Step: 300, Horizon: 1 + rng.IntN(6), Day: float64(day), Capacity: 128 + rng.IntN(700), HistoryBits: bits}
		e, err := NewEngine(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// A growing ring on its own takes NaN too (the models do not).
		sh, _ := cfg.shared()
		grown := &History{}
		grown.init(sh.cap, sh.half, int(sh.bsz), int(sh.nb))
		v := e.VM("v")
		steps := 1 + rng.IntN(2500)
		check := func(what string, h *History) {
			t.Helper()
			for _, n := range []int{0, 1, 2, 31, 32, 33, day / 300, day/300 - 1, rng.IntN(h.Len() + 2), h.Len(), h.Len() + 5} {
				got, want := h.Peak(n), h.scanPeak(n)
				if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
					t.Fatalf("trial %d %s (%d bits, day %d, cap %d, after %d): Peak(%d) = %v, scan %v", trial, what, bits, day/300, h.Cap(), h.Total(), n, got, want)
				}
			}
		}
		for i := range steps {
			x := float32(rng.ExpFloat64() * 1000)
			switch rng.IntN(40) {
			case 0:
				x = -x
			case 1:
				x = 0
			case 2:
				x = float32(math.Copysign(0, -1))
			case 3:
				if trial%5 == 0 {
					x = float32(math.NaN())
				}
			}
			if x == x {
				v.Observe(model.CPU, float64(x))
			}
			grown.Push(x)
			if i%97 == 0 || i == steps-1 {
				check("arena", &v.res[model.CPU].hist)
				check("grown", grown)
			}
		}
		var buf bytes.Buffer
		if err := e.Save(&buf); err != nil {
			t.Fatal(err)
		}
		l, _ := NewEngine(cfg)
		if err := l.Load(&buf); err != nil {
			t.Fatal(err)
		}
		check("loaded", &l.VM("v").res[model.CPU].hist)
	}
}

// bfloat16 rounding: to nearest, ties to even, within 2^-8 relative, exact
// for values it can hold, NaN kept, and no finite value becomes infinite.
func TestBF16Rounding(t *testing.T) {
	for _, c := range []struct{ in, want float32 }{
		{0, 0}, {1, 1}, {-2.5, -2.5}, {3000, 3008}, {3016, 3008}, {700, 700},
		{1 + 1.0/256, 1}, {1 + 3.0/256, 1 + 4.0/256}, {math.MaxFloat32, math.Float32frombits(0x7f7f0000)},
		{-math.MaxFloat32, -math.Float32frombits(0x7f7f0000)}, {float32(math.Inf(1)), float32(math.Inf(1))},
	} {
		if got := fromBF16(toBF16(c.in)); got != c.want {
			t.Errorf("bf16(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := fromBF16(toBF16(float32(math.NaN()))); got == got {
		t.Errorf("bf16(NaN) = %v", got)
	}
	if got := fromBF16(toBF16(math.Float32frombits(0x7f800001))); got == got {
		t.Errorf("bf16(signalling NaN) = %v", got)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for range 100000 {
		x := math.Float32frombits(rng.Uint32() & 0x7f7fffff)
		if x < 1e-37 {
			continue
		}
		q := fromBF16(toBF16(x))
		if r := math.Abs(float64(q-x)) / float64(x); r > 1.0/256 {
			t.Fatalf("bf16(%v) = %v: relative error %v", x, q, r)
		}
		if fromBF16(toBF16(q)) != q {
			t.Fatalf("bf16 not idempotent at %v", q)
		}
	}
}

// A 16-bit history returns the newest exactN samples exactly and older ones
// rounded, and a repeated value is forecast exactly (its bound not below it).
func TestHalfHistoryKeepsRecentExact(t *testing.T) {
	s, _ := NewSeries(Config{})
	for i := range 300 {
		s.Observe(0.7 + float32(i)*1e-3)
	}
	h := s.History()
	for i := range 300 {
		x := 0.7 + float32(299-i)*1e-3
		want := x
		if i >= exactN {
			want = h.Quantize(x)
		}
		if got := h.At(i); got != want {
			t.Fatalf("At(%d) = %v, want %v", i, got, want)
		}
	}
	for range 200 {
		s.Observe(0.7)
	}
	p, u := make([]float32, 6), make([]float32, 6)
	s.Forecast(p, u, 0.9)
	if p[0] != 0.7 {
		t.Errorf("forecast %v for a VM repeating 0.7", p[0])
	}
}
