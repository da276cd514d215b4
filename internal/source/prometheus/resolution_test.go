package prometheus

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/model"
)

// TestBackfillResolution measures what the backfill's resolution does to
// the first cycle's forecasts, on the week's data set (HEADROOM_PROM_BENCH=1,
// as BenchmarkPrometheusFleet; it starts Prometheus):
//
//	HEADROOM_PROM_BENCH=1 flock /tmp/headroom-lab.lock go test -run TestBackfillResolution -v -timeout 1h ./internal/source/prometheus
//
// For VMs on the first HEADROOM_PROM_CMP_HOSTS hosts (default 50), at four
// times of day, it backfills the week up to that time at three resolutions
// (2-minute points throughout, the reference; 14-minute points throughout,
// the former default; 14-minute points for the last two days and hourly
// before, the default), feeds each into a forecast engine as the controller
// does (1-minute steps, the default policy's horizon and confidence), and
// compares the forecasts with what the data holds for the following steps
// (the preset's 2m rates at 1-minute steps): the point forecasts' mean
// absolute error, the upper bounds' coverage and mean, and the mean
// absolute difference from the reference's forecasts.
func TestBackfillResolution(t *testing.T) {
	w := startWeek(t)
	nh := min(envInt("HEADROOM_PROM_CMP_HOSTS", 50), w.nh)
	pol, err := core.ParsePolicy("headroom")
	if err != nil {
		t.Fatal(err)
	}
	fp, ok := pol.(interface {
		HorizonSteps(float64) int
		Confidence() float64
	})
	if !ok {
		t.Fatal("the headroom policy does not forecast")
	}
	step := time.Minute
	H, conf := fp.HorizonSteps(step.Seconds()), fp.Confidence()
	inner := memFleet(nh, w.perVMs)
	defer inner.Close()
	ctx := context.Background()
	vms, err := inner.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(7*24*time.Hour/step) + 64
	driver := func(points int, old time.Duration, now time.Time) *Driver {
		src, err := New(Config{URL: "http://" + w.addr, Timeout: 5 * time.Minute, BackfillPoints: points, BackfillOldStep: old},
			Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return NewDriver(inner, src)
	}
	schemes := []struct {
		name   string
		points int
		old    time.Duration
	}{
		{"reference: 2-min points", maxPoints, step},
		{"before: 14-min points", 736, step},
		{"after: 14 min for 2 days, 1 h before", 736, 0},
	}
	res := []model.Resource{model.CPU, model.Mem, model.Net, model.Disk}
	type acc struct{ absErr, truth, covered, upper, diffRef, cnt [4]float64 }
	accs := make([]acc, len(schemes))
	t.Logf("%d VMs, horizon %d steps, confidence %v", len(vms), H, conf)
	for _, back := range []time.Duration{2 * time.Hour, 8 * time.Hour, 14 * time.Hour, 20 * time.Hour} {
		cut := w.end.Add(-back)
		truth := map[string][]model.Resources{}
		var mu sync.Mutex
		if _, err := driver(maxPoints, step, cut.Add(time.Duration(H)*step+time.Second)).Backfill(ctx, vms, step, H, func(id string, d []model.Resources) {
			mu.Lock()
			truth[id] = d
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		var ref map[string]model.ResourceForecast
		for si, sc := range schemes {
			eng, err := forecast.NewEngine(forecast.Config{Step: step.Seconds(), Horizon: H, Day: 86400})
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			got, err := driver(sc.points, sc.old, cut.Add(time.Second)).Backfill(ctx, vms, step, n, func(id string, d []model.Resources) {
				v := eng.VM(id)
				for _, x := range d {
					v.ObserveAll(x)
				}
			})
			if err != nil || got != len(vms) {
				t.Fatalf("%s: backfilled %d of %d VMs: %v", sc.name, got, len(vms), err)
			}
			el := time.Since(t0)
			fcs := map[string]model.ResourceForecast{}
			for _, v := range vms {
				f, ok := eng.Forecast(v.ID, H, conf)
				tr := truth[v.ID]
				if !ok || len(tr) != H {
					t.Fatalf("%s: %s: forecast %v, %d true points", sc.name, v.ID, ok, len(tr))
				}
				fcs[v.ID] = f
				a := &accs[si]
				for s := range H {
					for ri, r := range res {
						p, u, x := pred(f, r, s), f.Upper[s].Get(r), tr[s].Get(r)
						a.absErr[ri] += math.Abs(p - x)
						a.truth[ri] += math.Abs(x)
						a.upper[ri] += u
						if x <= u {
							a.covered[ri]++
						}
						if ref != nil {
							a.diffRef[ri] += math.Abs(p - pred(ref[v.ID], r, s))
						}
						a.cnt[ri]++
					}
				}
			}
			if ref == nil {
				ref = fcs
			}
			t.Logf("cut %s: %s: backfill and observe %v", cut.UTC().Format(time.RFC3339), sc.name, el.Round(time.Millisecond))
		}
	}
	for si, sc := range schemes {
		a := accs[si]
		line := sc.name + ":"
		for ri, r := range res {
			line += fmt.Sprintf("  %s MAE %.2f%% of mean, coverage %.3f, upper %.3f x mean, |pred-ref| %.2f%%;", r,
				100*a.absErr[ri]/a.truth[ri], a.covered[ri]/a.cnt[ri], a.upper[ri]/a.truth[ri], 100*a.diffRef[ri]/a.truth[ri])
		}
		t.Log(line)
	}
}

func pred(f model.ResourceForecast, r model.Resource, s int) float64 {
	switch r {
	case model.CPU:
		return f.PredictedCPU[s]
	case model.Mem:
		return f.PredictedMemory[s]
	case model.Net:
		return f.PredictedNetworkIO[s]
	}
	return f.PredictedDiskIO[s]
}
