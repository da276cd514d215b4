package controller

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// holding is a driver whose stats source reports held hosts.
type holding struct {
	hypervisor.Driver
	mu   sync.Mutex
	held map[string]string
}

func (h *holding) Held() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// TestHoldKeepsMovesOffAHeldHost: host a is overloaded, but its stats are
// stale: the cycle logs a hold with the reason and moves nothing; once its
// stats are whole again the overload is acted on.
func TestHoldKeepsMovesOffAHeldHost(t *testing.T) {
	_, d, log := lab(t, Auto, 0.9)
	h := &holding{Driver: d, held: map[string]string{"a": "v1's newest sample is 5m0s old"}}
	var hcs []HostConfig
	for _, id := range []string{"a", "b", "c"} {
		hcs = append(hcs, HostConfig{ID: id, URI: "mem://" + id})
	}
	c, err := New(Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, h, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		d.Advance(10 * time.Second)
		cy, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(cy.Plan.Moves) != 0 || len(cy.Started) != 0 {
			t.Fatalf("moves on a held host: %+v", cy.Plan.Moves)
		}
	}
	es, err := log.List(store.Filter{Kind: Hold})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Host != "a" || !strings.Contains(es[0].Message, "v1's newest sample is 5m0s old") {
		t.Fatalf("hold events %+v", es)
	}
	h.mu.Lock()
	h.held = nil
	h.mu.Unlock()
	d.Advance(10 * time.Second)
	cy, err := c.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cy.Started) == 0 {
		t.Fatalf("no move once the hold lifted: %+v", cy.Plan)
	}
	for i := 0; len(c.InFlight()) > 0 && i < 1000; i++ { // the driver's clock is virtual
		d.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	c.Wait()
}

// backfilling serves a VM's past: a daily sine sampled at the interval.
type backfilling struct {
	hypervisor.Driver
	f     func(i int) float64 // demand at step i, the present at i = 0
	asked int
}

func (b *backfilling) Backfill(ctx context.Context, vms []hypervisor.VM, step time.Duration, n int, fn func(string, []model.Resources)) (int, error) {
	b.asked++
	for _, v := range vms {
		out := make([]model.Resources, n)
		for i := range out {
			out[i] = model.Resources{CPU: b.f(i - n), Mem: 256}
		}
		fn(v.ID, out)
	}
	return len(vms), nil
}

// TestWarmStartForecastsTheDailyCycle: with a week of backfilled history, the
// first cycle's forecast follows the daily curve; a cold controller's cannot.
func TestWarmStartForecastsTheDailyCycle(t *testing.T) {
	const day = 288 // steps: a day at 5 minutes
	curve := func(i int) float64 { return 500 + 400*math.Sin(2*math.Pi*float64(i)/day) }
	run := func(warm bool) (mae float64, log *store.Log, b *backfilling) {
		d := memory.New(memory.Options{}, hypervisor.Host{ID: "a", PEs: 4, PEMIPS: 1000}, hypervisor.Host{ID: "b", PEs: 4, PEMIPS: 1000})
		t.Cleanup(func() { d.Close() })
		if err := d.AddVM(hypervisor.VM{ID: "v", Host: "a", VCPUs: 1, MemMiB: 256, State: hypervisor.StateRunning,
			Size: model.Resources{CPU: 1000, Mem: 256}}, memory.Usage{CPUUtil: curve(0) / 1000, MemMiB: 256}); err != nil {
			t.Fatal(err)
		}
		var err error
		log, err = store.Open(filepath.Join(t.TempDir(), "events.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { log.Close() })
		var drv hypervisor.Driver = d
		if warm {
			b = &backfilling{Driver: d, f: curve}
			drv = b
		}
		c, err := New(Config{Interval: 5 * time.Minute, Hosts: []HostConfig{{ID: "a", URI: "m://a"}, {ID: "b", URI: "m://b"}}}, drv, log)
		if err != nil {
			t.Fatal(err)
		}
		d.Advance(5 * time.Minute)
		cy, err := c.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		f := cy.Forecasts[0].PredictedCPU
		if len(f) < 3 {
			t.Fatalf("forecast %v", f)
		}
		for s, x := range f {
			mae += math.Abs(x-curve(s+1)) / float64(len(f))
		}
		t.Logf("warm=%v forecast %d steps: %.0f", warm, len(f), f[:min(len(f), 12)])
		return mae, log, b
	}
	warm, log, b := run(true)
	cold, _, _ := run(false)
	t.Logf("first-cycle forecast error: warm %.1f, cold %.1f (MIPS)", warm, cold)
	if warm > cold/3 {
		t.Errorf("warm start does not help the first forecast: warm %.1f, cold %.1f", warm, cold)
	}
	es, err := log.List(store.Filter{Kind: WarmStart})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || !strings.HasPrefix(es[0].Message, "backfilled 2080 samples of 1 of 1 new VMs") || b.asked != 1 {
		t.Fatalf("warm-start events %+v, backfills %d", es, b.asked)
	}
}
