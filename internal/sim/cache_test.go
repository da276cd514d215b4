package sim

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/core"
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
