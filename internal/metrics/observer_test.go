package metrics

import (
	"context"
	"io"
	"math"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
	"github.com/headroom/headroom/internal/store"
)

// newController is a controller over an in-memory cluster of two hosts with three
// busy VMs on the first.
func newController(t testing.TB) (*controller.Controller, *store.Log, *memory.Driver) {
	t.Helper()
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{}, hs...)
	for _, vm := range []string{"v1", "v2", "v3"} {
		d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 128}, memory.Usage{CPUUtil: 0.9})
	}
	log, err := store.Open(filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	c, err := controller.New(controller.Config{Interval: 10 * time.Second, Mode: controller.Approve, Hosts: hcs}, d, log)
	if err != nil {
		t.Fatal(err)
	}
	return c, log, d
}

func TestHostForecastSumsIndependentNormals(t *testing.T) {
	z := policy.Z(0.9)
	fc := func(mean, sd float64) model.ResourceForecast {
		return model.ResourceForecast{PredictedCPU: []float64{mean}, PredictedMemory: []float64{0},
			PredictedNetworkIO: []float64{0}, PredictedDiskIO: []float64{0},
			Upper: []model.Resources{{CPU: mean + z*sd}}, Confidence: 0.9}
	}
	snap := &model.Snapshot{Hosts: []model.Host{{ID: "h", Capacity: model.Resources{CPU: 100}}, {ID: "g"}},
		VMs: []model.VM{{ID: "x", Host: 0, Demand: model.Resources{CPU: 25}}, {ID: "y", Host: 0, Demand: model.Resources{CPU: 35}},
			{ID: "z", Host: 1, Demand: model.Resources{CPU: 99}}}}
	cy := controller.Cycle{Snapshot: snap, Forecasts: []model.ResourceForecast{fc(30, 3), fc(40, 4), fc(99, 0)}}
	got := hostForecast(cy, 0, model.CPU, z)
	if got.Demand != 60 || got.Capacity != 100 || len(got.Mean) != 1 || got.Mean[0] != 70 {
		t.Fatalf("host forecast %+v: want demand 60, mean 70", got)
	}
	// Spreads add as variances: sd 5, not 7.
	if want := 70 + z*5; math.Abs(got.Upper[0]-want) > 1e-9 {
		t.Errorf("upper %v, want %v", got.Upper[0], want)
	}
	if want := policy.ProbAbove(70, 5, 100); math.Abs(got.Prob-want) > 1e-12 || got.Prob <= 0 {
		t.Errorf("P(overload) %v, want %v", got.Prob, want)
	}
}

func TestForecastQualityOnline(t *testing.T) {
	q := newQuality(100)
	snap := func(cpu float64) *model.Snapshot {
		return &model.Snapshot{Hosts: []model.Host{{ID: "h"}}, VMs: []model.VM{{ID: "x", Host: 0, Demand: model.Resources{CPU: cpu, Mem: 7}}}}
	}
	// Demand alternates 10, 20; every forecast says 15 with an upper bound of 18:
	// it covers the 10s, misses the 20s, and is off by 5 each time, as is the
	// mean of the last 12.
	fc := []model.ResourceForecast{{PredictedCPU: []float64{15}, PredictedMemory: []float64{7}, Upper: []model.Resources{{CPU: 18, Mem: 7}}}}
	for k := range 40 {
		q.observe(controller.Cycle{Snapshot: snap(10 + 10*float64(k%2)), Forecasts: fc})
	}
	s := q.summary(model.CPU)
	// Pairs count from the 13th cycle on (12 actuals behind them): 28 of them.
	if s.N != 28 || s.Coverage != 0.5 || math.Abs(s.MAE-5) > 1e-9 || math.Abs(s.BaselineMAE-5) > 1e-9 {
		t.Errorf("cpu quality %+v: want n 28, coverage 0.5, MAE 5 and 5", s)
	}
	if m := q.summary(model.Mem); m.Coverage != 1 || m.MAE != 0 {
		t.Errorf("mem forecast exact: %+v", m)
	}
	// The window rolls: 100 more cycles of perfect forecasts push the misses out.
	exact := func(v float64) []model.ResourceForecast {
		return []model.ResourceForecast{{PredictedCPU: []float64{v}, Upper: []model.Resources{{CPU: v}}}}
	}
	for range 101 {
		q.observe(controller.Cycle{Snapshot: snap(12), Forecasts: exact(12)})
	}
	if s := q.summary(model.CPU); s.Coverage != 1 || s.MAE != 0 {
		t.Errorf("after the window rolled: %+v", s)
	}
}

func TestMigrationsFromTheEventLog(t *testing.T) {
	c, log, _ := newController(t)
	// A move logged before the observer started is not counted.
	log.Append(store.Event{Kind: store.MigrationEnd, VM: "old", State: "completed", Seconds: 3})
	o := New(c, log, Options{})
	r := model.Reason{Rule: "overload"}
	log.Append(store.Event{Kind: store.Decision, VM: "v1", Reason: &r})
	log.Append(store.Event{Kind: store.MigrationEnd, VM: "v1", State: "completed", Seconds: 4, DowntimeMs: 50,
		Options: &model.StateTransferOptions{PredictedSeconds: 5}})
	log.Append(store.Event{Kind: store.MigrationEnd, VM: "v2", State: "failed", Seconds: 1, Error: "boom"})
	log.Append(store.Event{Kind: store.Failure, VM: "v3", Message: "migration refused"})
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, c := range []struct {
		result, reason string
		want           float64
	}{{"completed", "overload", 1}, {"failed", "unknown", 1}, {"refused", "unknown", 1}} {
		if got := testutil.ToFloat64(o.migrations.WithLabelValues(c.result, c.reason)); got != c.want {
			t.Errorf("migrations{%s,%s} = %v, want %v", c.result, c.reason, got, c.want)
		}
	}
	body := rec.Body.String()
	for _, want := range []string{
		"headroom_migration_duration_seconds_count 2",
		"headroom_migration_downtime_seconds_sum 0.05",
		"headroom_migration_duration_prediction_error_seconds_sum 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// A second scrape counts nothing twice.
	o.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
	if got := testutil.ToFloat64(o.migrations.WithLabelValues("completed", "overload")); got != 1 {
		t.Errorf("after a second scrape: %v", got)
	}
}

func TestMetricsAfterCyclesLintClean(t *testing.T) {
	c, log, _ := newController(t)
	o := New(c, log, Options{PerVM: 2})
	ctx := context.Background()
	for range 3 {
		cy, err := c.Step(ctx)
		o.Observe(cy, err)
	}
	problems, err := testutil.GatherAndLint(o.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// Three VMs are over the guard of two: no per-VM series, and the guard says so.
	if n := testutil.CollectAndCount(o.vmDemand); n != 0 {
		t.Errorf("%d per-VM series over the guard", n)
	}
	if testutil.ToFloat64(o.vmGuard) != 1 {
		t.Error("guard not raised")
	}
	if got := testutil.ToFloat64(o.hostCap.WithLabelValues("a", "cpu")); got != 2000 {
		t.Errorf("capacity of a: %v", got)
	}
	if got := testutil.ToFloat64(o.sourceUp.WithLabelValues("b")); got != 1 {
		t.Errorf("source_up b: %v", got)
	}
	if got := testutil.ToFloat64(o.hostProb.WithLabelValues("a", "cpu")); !(got > 0.5) {
		t.Errorf("P(overload) of a host running 3 VMs at 90%% on 2 cores: %v", got)
	}
	o2 := New(c, log, Options{PerVM: 10})
	cy, err := c.Step(ctx)
	o2.Observe(cy, err)
	if n := testutil.CollectAndCount(o2.vmDemand); n != 6 {
		t.Errorf("%d per-VM demand series, want 3 VMs x cpu, mem", n)
	}
}

func TestUnreachableHostGoesStale(t *testing.T) {
	c, log, d := newController(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := New(c, log, Options{Now: func() time.Time { return now }})
	cy, err := c.Step(context.Background())
	o.Observe(cy, err)
	d.SetUnreachable("b", true)
	now = now.Add(30 * time.Second)
	cy, err = c.Step(context.Background())
	o.Observe(cy, err)
	if got := testutil.ToFloat64(o.sourceUp.WithLabelValues("b")); got != 0 {
		t.Errorf("source_up of an unreachable host: %v", got)
	}
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), `headroom_source_staleness_seconds{host="b"} 30`) ||
		!strings.Contains(string(body), `headroom_source_staleness_seconds{host="a"} 0`) {
		t.Errorf("staleness:\n%s", grep(string(body), "staleness"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConcurrentReaders runs cycles while the dashboard and a scraper read, for -race.
func TestConcurrentReaders(t *testing.T) {
	c, log, _ := newController(t)
	o := New(c, log, Options{PerVM: 10})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			o.State(true)
			o.VMs()
			o.VM("v1")
			o.Last()
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			o.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c.SetModeBy(controller.Auto, "t")
			c.SetModeBy(controller.Approve, "t")
		}
	}()
	wrap := o.Wrap(nil)
	for range 20 {
		cy, err := c.Step(ctx)
		wrap(cy, err)
	}
	cancel()
	wg.Wait()
	if st := o.State(true); len(st.Hosts) != 2 || len(st.Hosts[0].Points) != 20 {
		t.Errorf("state after 20 cycles: %d hosts, %d points", len(st.Hosts), len(st.Hosts[0].Points))
	}
}
