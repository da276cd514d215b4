package sim

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
)

// The per-step demand rows must give exactly what reading each VM's series gives,
// at any time (on and between samples, past the end), for series of unequal
// lengths, and as time goes forward, back and within a step.
func TestDemandRowsEqualDemand(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := &trace.Workload{Name: "rand", Step: 300}
	for v := range 200 {
		s := trace.Series{ID: string(rune('a' + v%26))}
		for range 2 + rng.IntN(20) {
			x := rng.Float32()
			if rng.IntN(5) == 0 {
				x = 0
			}
			s.CPU = append(s.CPU, x)
		}
		w.VMs = append(w.VMs, s)
	}
	cfg := DefaultConfig()
	if err := cfg.fill(w); err != nil {
		t.Fatal(err)
	}
	e := &engine{cfg: cfg, w: w, snap: buildSnapshot(&cfg, w)}
	n := len(w.VMs)
	e.rows = demandRows{i: -1, lo: make([]float64, n), hi: make([]float64, n), end: make([]bool, n), size: make([]float64, n)}
	for v := range e.rows.size {
		e.rows.size[v] = e.snap.VMs[v].Size.CPU
	}
	d := make([]float64, n)
	times := []float64{0, 0.1, 300, 300.1, 299.99, 450, 6000, 7000.5, 100}
	for range 300 {
		times = append(times, rng.Float64()*8000)
	}
	for _, at := range times {
		e.cpuDemands(at, d)
		for v := range d {
			if want := e.demand(v, at); math.Float64bits(d[v]) != math.Float64bits(want) {
				t.Fatalf("t=%g VM %d: rows give %v, the series %v", at, v, d[v], want)
			}
		}
	}
}

// The engine's per-VM host and migrating arrays follow the snapshot through
// whole runs (migrations starting and ending, idle VMs leaving), for a
// CloudSim policy and headroom; every update checks them.
func TestMirrorsFollowTheSnapshot(t *testing.T) {
	day, err := trace.Load("")
	if err != nil {
		t.Fatal(err)
	}
	w := *day
	w.VMs = w.VMs[:150]
	cfg := ConfigFor(&w)
	cfg.Hosts = 100
	checkMirrors = true
	defer func() { checkMirrors = false }()
	for _, n := range []string{"lr-mmt-1.2", "headroom", "thr-mmt-0.8"} {
		p, err := core.ParsePolicy(n)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(&w, p, Options{Config: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		if r.Migrations == 0 {
			t.Errorf("%s: no migrations, nothing checked", n)
		}
	}
}

// The forecaster writes each interval's forecasts into the last interval's
// slices; they must equal fresh forecasts, clamped, from an engine fed the same.
func TestForecastsIntoReusedSlicesEqualFreshOnes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := flatWorkload(20, 0.5, 0.2, 0.9, 0.1, 0.7)
	cfg := DefaultConfig()
	if err := cfg.fill(w); err != nil {
		t.Fatal(err)
	}
	pol, err := core.ParsePolicy("headroom")
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{cfg: cfg, w: w, snap: buildSnapshot(&cfg, w)}
	f, err := newForecaster(pol, e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if f.eng == nil {
		t.Fatal("headroom gets no forecast engine")
	}
	ref, err := forecast.NewEngine(forecast.Config{Step: cfg.Interval, Horizon: f.steps})
	if err != nil {
		t.Fatal(err)
	}
	refVMs := make([]*forecast.VM, len(e.snap.VMs))
	for v := range refVMs {
		refVMs[v] = ref.VM(e.snap.VMs[v].ID)
		e.snap.VMs[v].Host = 0
	}
	for k := range 200 {
		for v := range e.snap.VMs {
			e.snap.VMs[v].Demand = model.Resources{CPU: rng.Float64() * 1.2 * e.snap.VMs[v].Size.CPU}
			if rng.IntN(10) == 0 {
				e.snap.VMs[v].Demand.CPU = 0
			}
		}
		got := f.forecast(float64(k+1) * cfg.Interval)
		for v := range e.snap.VMs {
			refVMs[v].Observe(model.CPU, e.snap.VMs[v].Demand.CPU)
			want := refVMs[v].Forecast(f.steps, f.conf)
			want.Clamp(e.snap.VMs[v].Size)
			if !reflect.DeepEqual(got[v], want) {
				t.Fatalf("interval %d VM %d: reused %+v, fresh %+v", k, v, got[v], want)
			}
		}
	}
}

// update's shortcuts change nothing: whole runs with and without them give
// the same results, for policies that consolidate (hosts go empty and off),
// one that never switches hosts off, and headroom.
func TestUpdateShortcutsChangeNothing(t *testing.T) {
	day, err := trace.Load("")
	if err != nil {
		t.Fatal(err)
	}
	w := *day
	w.VMs = w.VMs[:200]
	cfg := ConfigFor(&w)
	cfg.Hosts = 150
	for _, n := range []string{"lr-mmt-1.2", "headroom", "thr-mmt-0.8", "npa", "dvfs"} {
		p, err := core.ParsePolicy(n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Run(&w, p, Options{Config: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		plain = true
		want, err := Run(&w, p, Options{Config: &cfg})
		plain = false
		if err != nil {
			t.Fatal(err)
		}
		got.WallSeconds, want.WallSeconds = 0, 0
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s with shortcuts: %+v\nwithout: %+v", n, *got, *want)
		}
	}
}
