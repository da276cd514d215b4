package backtest

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/report"
	"github.com/headroom/headroom/internal/trace"
)

func load(t *testing.T, spec string) *trace.Workload {
	t.Helper()
	w, err := trace.Load(spec)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func find(r *Result, name, res string) Score {
	for _, s := range r.Models {
		if s.Name == name && s.Resource == res {
			return s
		}
	}
	return Score{}
}

func TestJSONContract(t *testing.T) {
	w := load(t, "planetlab:testdata/planetlab")
	r, err := Run(w, Options{Horizon: 6, Confidence: 0.9, Models: []string{"median24"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	var got struct {
		Models []map[string]any `json:"models"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range got.Models {
		for _, k := range []string{"name", "resource", "mae", "rmse", "pinball", "coverage", "n"} {
			if _, ok := m[k]; !ok {
				t.Errorf("model entry %v lacks %q", m, k)
			}
		}
		names[m["name"].(string)] = true
		steps, _ := m["mae_by_step"].([]any)
		if len(steps) != 6 {
			t.Fatalf("%v: mae_by_step %v, want 6 steps", m["name"], m["mae_by_step"])
		}
		var sum float64
		for _, e := range steps {
			sum += e.(float64)
		}
		if mae := m["mae"].(float64); math.Abs(sum/6-mae) > 1e-9*max(mae, 1) {
			t.Errorf("%v: mean of mae_by_step %v != mae %v", m["name"], sum/6, mae)
		}
	}
	for _, n := range []string{"default", "last", "mean12", "median24"} {
		if !names[n] {
			t.Errorf("no %q in %v", n, names)
		}
	}
	// Every origin from the warm-up on with a full horizon ahead, every step.
	want := int64(len(w.VMs)) * int64(w.Len()-12-6+1) * 6
	for _, s := range r.Models {
		if s.N != want {
			t.Errorf("%s/%s: n = %d, want %d", s.Name, s.Resource, s.N, want)
		}
		if s.Resource != "cpu" {
			t.Errorf("PlanetLab has CPU only, got %s", s.Resource)
		}
	}
	if d, m := find(r, "default", "cpu"), find(r, "mean12", "cpu"); !(d.MAE < m.MAE) {
		t.Errorf("default MAE %v not below mean12's %v", d.MAE, m.MAE)
	}
}

func TestBitbrainsSample(t *testing.T) {
	r, err := Run(load(t, "bitbrains:testdata/bitbrains"), Options{Horizon: 6, Confidence: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range []string{"cpu", "mem", "net", "disk"} {
		d, m := find(r, "default", res), find(r, "mean12", res)
		if d.N == 0 || !(d.MAE < m.MAE) {
			t.Errorf("%s: default MAE %v, mean12 %v", res, d.MAE, m.MAE)
		}
		// Three VMs, 1000 samples: calibration is close but not exact.
		if math.Abs(d.Coverage-0.9) > 0.04 {
			t.Errorf("%s: coverage %.3f at 0.9", res, d.Coverage)
		}
	}
}

// A forecast from origin i may only depend on samples before i: changing the
// future must not change any earlier forecast.
func TestNoLookAhead(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func() *trace.Workload {
		x := make([]float32, 400)
		for i := range x {
			x[i] = float32(rng.Float64())
		}
		return &trace.Workload{Name: "synthetic", Step: 300, VMs: []trace.Series{{ID: "a", CPU: x}}}
	}
	a := mk()
	b := mk()
	const cut = 250
	copy(b.VMs[0].CPU[:cut], a.VMs[0].CPU[:cut])
	opts := Options{Horizon: 6, Confidence: 0.9, Samples: 1}
	ra, _ := Run(a, opts)
	rb, _ := Run(b, opts)
	ta, tb := ra.Traces[0], rb.Traces[0]
	same, differ := 0, 0
	for i := range ta.Index {
		origin := int(ta.Index[i]) - 6 + 1
		if origin <= cut {
			if ta.Point[i] != tb.Point[i] || ta.Upper[i] != tb.Upper[i] {
				t.Fatalf("origin %d (before the change at %d): forecast %v/%v vs %v/%v", origin, cut, ta.Point[i], ta.Upper[i], tb.Point[i], tb.Upper[i])
			}
			same++
		} else if ta.Point[i] != tb.Point[i] {
			differ++
		}
	}
	if same == 0 || differ == 0 {
		t.Fatalf("test saw %d unchanged and %d changed forecasts", same, differ)
	}
}

func TestOptionErrors(t *testing.T) {
	w := &trace.Workload{Step: 300, VMs: []trace.Series{{ID: "a", CPU: make([]float32, 50)}}}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Horizon: 0, Confidence: 0.9}, "horizon"},
		{Options{Horizon: 6, Confidence: 1}, "confidence"},
		{Options{Horizon: 6, Confidence: 0.9, Models: []string{"crystal-ball"}}, "crystal-ball"},
	} {
		if _, err := Run(w, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %q", c.opts, err, c.want)
		}
	}
	if _, err := Run(&trace.Workload{}, Options{Horizon: 1, Confidence: 0.9}); err == nil {
		t.Error("empty workload accepted")
	}
	short := &trace.Workload{Step: 300, VMs: []trace.Series{{ID: "a", CPU: make([]float32, 15)}}}
	if _, err := Run(short, Options{Horizon: 6, Confidence: 0.9}); err == nil || !strings.Contains(err.Error(), "15 samples") {
		t.Errorf("15 samples with 12 of warm-up and 6 ahead: error %v", err)
	}
}

func TestReportPage(t *testing.T) {
	r, err := Run(load(t, "bitbrains:testdata/bitbrains"), Options{Horizon: 3, Confidence: 0.8, Samples: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Traces) != 2*4 {
		t.Fatalf("%d traces, want 2 VMs x 4 resources", len(r.Traces))
	}
	dir := t.TempDir()
	path, err := report.Write(dir, r.Page())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Calibration", "default", "mean12", "<svg"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.svg")); len(m) < 9 {
		t.Errorf("%d charts written, want calibration + 8 traces", len(m))
	}
	if txt := r.Text(); !strings.Contains(txt, "default") || !strings.Contains(txt, "0.80 ->") {
		t.Errorf("text table:\n%s", txt)
	}
}

// The default model learns a prior across VMs: changing one VM's future must
// not change another VM's earlier forecasts either, and does change later ones
// (the VMs are walked together in time, not one after another).
func TestNoLookAheadAcrossVMs(t *testing.T) {
	const n, cut = 400, 250
	mk := func(seed uint64) *trace.Workload {
		rng := rand.New(rand.NewPCG(3, seed))
		w := &trace.Workload{Name: "synthetic", Step: 300}
		for k, level := range []float64{0.8, 0.3, 0.2, 0.1} { // VM "a" is the busiest: its trace is kept
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(level + 0.1*rng.Float64())
				if k == 1 {
					x[i] = float32(level + 0.001*float64(i)) // a ramp: the last value's
				}
			}
			w.VMs = append(w.VMs, trace.Series{ID: string(rune('a' + k)), CPU: x})
		}
		return w
	}
	a, b := mk(1), mk(1)
	for k := 1; k < len(b.VMs); k++ { // every VM but "a" changes from cut on
		for i := cut; i < n; i++ {
			b.VMs[k].CPU[i] = 1 - b.VMs[k].CPU[i]
		}
	}
	opts := Options{Horizon: 6, Confidence: 0.9, Samples: 1}
	ra, _ := Run(a, opts)
	rb, _ := Run(b, opts)
	ta, tb := ra.Traces[0], rb.Traces[0]
	if ta.VM != "a" || tb.VM != "a" {
		t.Fatalf("traces of %s and %s, want a", ta.VM, tb.VM)
	}
	same, differ := 0, 0
	for i := range ta.Index {
		origin := int(ta.Index[i]) - 6 + 1
		if origin <= cut {
			if ta.Point[i] != tb.Point[i] || ta.Upper[i] != tb.Upper[i] {
				t.Fatalf("origin %d (before the others change at %d): forecast %v/%v vs %v/%v", origin, cut, ta.Point[i], ta.Upper[i], tb.Point[i], tb.Upper[i])
			}
			same++
		} else if ta.Point[i] != tb.Point[i] {
			differ++
		}
	}
	if same == 0 || differ == 0 {
		t.Fatalf("test saw %d unchanged and %d changed forecasts of VM a", same, differ)
	}
}
