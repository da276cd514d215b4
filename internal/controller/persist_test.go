package controller

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/hypervisor/memory"
)

// captureWarnings collects warnf's messages for the test's duration.
func captureWarnings(t *testing.T) func() []string {
	var mu sync.Mutex
	var got []string
	old := warnf
	warnf = func(format string, a ...any) {
		mu.Lock()
		got = append(got, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	t.Cleanup(func() { warnf = old })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// churn moves the clock one interval with new, varying usage for every VM, so
// the engines have something to learn.
func churn(t *testing.T, d *memory.Driver, k int) {
	t.Helper()
	for i, vm := range []string{"v1", "v2", "v3"} {
		u := memory.Usage{CPUUtil: 0.2 + 0.1*float64((k*7+i*3)%5), MemMiB: float64(100 + (k*13+i*29)%120),
			NetKBps: float64(50 * ((k + i) % 4)), DiskKBps: float64(10 * ((k*3 + i) % 7)), DirtyMiBps: float64(1 + (k+i)%3)}
		if err := d.SetUsage(vm, u); err != nil {
			t.Fatal(err)
		}
	}
	d.Advance(10 * time.Second)
}

// forecastsOf is every VM's forecast from both engines, the full horizon at
// two confidences.
func forecastsOf(t *testing.T, c *Controller) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, vm := range []string{"v1", "v2", "v3"} {
		for _, en := range []*forecast.Engine{c.eng, c.dirty} {
			for _, conf := range []float64{0.5, 0.9} {
				f, ok := en.Forecast(vm, en.Horizon(), conf)
				if !ok || f.Horizon() == 0 {
					t.Fatalf("%s: no forecast (ok=%v)", vm, ok)
				}
				out[fmt.Sprintf("%s/%d/%g", vm, en.Horizon(), conf)] = f
			}
		}
	}
	return out
}

// runOnce runs Run for exactly one cycle: the cycle's callback cancels it.
func runOnce(t *testing.T, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Run(ctx, func(_ Cycle, err error) {
		if err != nil {
			t.Errorf("cycle: %v", err)
		}
		cancel()
	}); err != nil {
		t.Fatal(err)
	}
}

func TestForecastsSurviveRestart(t *testing.T) {
	warnings := captureWarnings(t)
	c1, d, log := lab(t, DryRun, 0.3)
	for k := range 40 {
		churn(t, d, k)
		if _, err := c1.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	churn(t, d, 40)
	runOnce(t, c1) // one more cycle, then Run saves as it returns
	if w := warnings(); len(w) != 2 {
		t.Fatalf("first start: warnings %q, want two about no snapshot yet", w)
	}
	before := forecastsOf(t, c1)

	c2, err := New(c1.cfg, d, log)
	if err != nil {
		t.Fatal(err)
	}
	if c2.eng.Len() != 0 {
		t.Fatal("a new controller has forecasts before loading")
	}
	c2.LoadForecasts()
	if after := forecastsOf(t, c2); !reflect.DeepEqual(before, after) {
		t.Fatalf("forecasts after the restart differ:\nbefore %v\nafter  %v", before, after)
	}
	// Same state, not only the same cached forecasts: both keep forecasting
	// alike on new samples.
	for k := 61; k < 80; k++ {
		churn(t, d, k)
		c1.Step(context.Background())
		c2.Step(context.Background())
	}
	if a, b := forecastsOf(t, c1), forecastsOf(t, c2); !reflect.DeepEqual(a, b) {
		t.Fatalf("forecasts diverge after the restart:\nkept     %v\nrestored %v", a, b)
	}

	// Run itself loads: a third controller's first cycle under Run forecasts
	// what the kept one does after the same cycle.
	if err := c1.SaveForecasts(); err != nil {
		t.Fatal(err)
	}
	c3, _ := New(c1.cfg, d, log)
	nw := len(warnings())
	churn(t, d, 80)
	c1.Step(context.Background())
	runOnce(t, c3)
	if a, b := forecastsOf(t, c1), forecastsOf(t, c3); !reflect.DeepEqual(a, b) {
		t.Fatalf("Run did not resume from the snapshot:\nkept %v\nRun  %v", a, b)
	}
	if w := warnings()[nw:]; len(w) != 0 {
		t.Errorf("warnings with a good snapshot: %q", w)
	}
}

func TestCorruptOrMissingSnapshotStartsCold(t *testing.T) {
	warnings := captureWarnings(t)
	c, d, log := lab(t, DryRun, 0.3)
	if err := log.PutBlob(blobForecasts, []byte("HRFCSNP1 this is not a snapshot")); err != nil {
		t.Fatal(err)
	}
	c.LoadForecasts() // forecast-engine corrupt, forecast-dirty missing
	w := warnings()
	if len(w) != 2 || !strings.Contains(w[0], "not loaded") || !strings.Contains(w[1], "no forecast snapshot") {
		t.Fatalf("warnings %q: want one for the corrupt and one for the missing snapshot", w)
	}
	for _, m := range w {
		if !strings.Contains(m, "starting cold") {
			t.Errorf("warning %q does not say it starts cold", m)
		}
	}
	if c.eng.Len() != 0 || c.dirty.Len() != 0 {
		t.Fatal("a bad snapshot left state behind")
	}
	// And the controller works cold.
	churn(t, d, 0)
	if _, err := c.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	forecastsOf(t, c)
}
