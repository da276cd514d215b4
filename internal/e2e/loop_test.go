package e2e

// Two regressions found by the lab scenarios, pinned down here against the
// in-memory cluster so they fail the same way every time and need no lab.

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// memLab is three 2-core hosts a, b, c with three busy 1-vCPU guests on a: 2.7
// cores of demand on 2, so the headroom policy moves one of them.
func memLab(t *testing.T) (*memory.Driver, []controller.HostConfig) {
	t.Helper()
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b", "c"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	for _, vm := range []string{"v1", "v2", "v3"} {
		if err := d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 256}, memory.Usage{CPUUtil: 0.9}); err != nil {
			t.Fatal(err)
		}
	}
	return d, hcs
}

func memController(t *testing.T, drv hypervisor.Driver, cfg controller.Config) (*controller.Controller, *store.Log) {
	t.Helper()
	log, err := store.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := controller.New(cfg, drv, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	t.Cleanup(c.Wait)
	return c, log
}

// slowFirst makes the first cycle's host listing take several intervals and
// records when each Stats call was made.
type slowFirst struct {
	hypervisor.Driver
	delay time.Duration

	mu    sync.Mutex
	slow  bool
	stats []time.Time
}

func (d *slowFirst) Hosts(ctx context.Context) ([]hypervisor.Host, error) {
	d.mu.Lock()
	first := !d.slow
	d.slow = true
	d.mu.Unlock()
	if first {
		time.Sleep(d.delay)
	}
	return d.Driver.Hosts(ctx)
}

func (d *slowFirst) Stats(ctx context.Context) (hypervisor.Stats, error) {
	d.mu.Lock()
	d.stats = append(d.stats, time.Now())
	d.mu.Unlock()
	return d.Driver.Stats(ctx)
}

// TestRunSpacesCycles: after a cycle that overran its interval, the next one still
// comes a full interval later. A ticker would fire at once to catch up, and the
// libvirt driver's CPU rates over that sliver of time were many times the truth
// (host0 read 21 cores in the lab), which moved a guest for nothing.
func TestRunSpacesCycles(t *testing.T) {
	mem, hcs := memLab(t)
	const iv = 40 * time.Millisecond
	drv := &slowFirst{Driver: mem, delay: 3 * iv}
	c, _ := memController(t, drv, controller.Config{Interval: iv, Mode: controller.DryRun, Hosts: hcs, Policy: "thr-mmt-0.8"})
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := c.Run(ctx, func(controller.Cycle, error) {
		if n++; n == 5 {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	drv.mu.Lock()
	defer drv.mu.Unlock()
	for i := 1; i < len(drv.stats); i++ {
		if gap := drv.stats[i].Sub(drv.stats[i-1]); gap < iv {
			t.Errorf("stats %d came %v after the previous, less than the %v interval", i, gap, iv)
		}
	}
}

// endsWhileListing completes the move in flight after the VM listing is taken and
// before the controller decides: the listing still shows the moved VM on its
// source.
type endsWhileListing struct {
	*memory.Driver
	c   func() *controller.Controller
	arm bool
}

func (d *endsWhileListing) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vms, err := d.Driver.VMs(ctx)
	if d.arm {
		d.arm = false
		d.Advance(time.Minute)
		for len(d.c().InFlight()) > 0 {
			time.Sleep(time.Millisecond) // the controller's watcher logs the end
		}
	}
	return vms, err
}

// TestStaleListingStartsNoExtraMove: a move that ends while a cycle reads the
// cluster leaves that cycle's snapshot showing the VM still on its source, so the
// source still looks overloaded. The cycle must not start a second move off it
// (nor move the VM again); the next cycle, which sees the VM on its target, decides
// afresh.
func TestStaleListingStartsNoExtraMove(t *testing.T) {
	mem, hcs := memLab(t)
	var c *controller.Controller
	drv := &endsWhileListing{Driver: mem, c: func() *controller.Controller { return c }}
	c, log := memController(t, drv, controller.Config{Interval: 10 * time.Second, Mode: controller.Auto, Hosts: hcs, MaxPerHost: 1})
	ctx := context.Background()
	first, err := c.Step(ctx)
	if err != nil || len(first.Started) != 1 {
		t.Fatalf("first cycle started %v (%v), want one move off a", first.Started, err)
	}
	moved := first.Started[0]
	drv.arm = true
	second, err := c.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if len(second.Started) != 0 {
		t.Errorf("the cycle that listed %s on its old host started %v", moved, second.Started)
	}
	for _, m := range second.Plan.Moves {
		if m.VMInstanceID == moved {
			t.Errorf("the cycle planned to move %s again: %+v", moved, m)
		}
	}
	if ends := list(t, log, store.Filter{VM: moved, Kind: store.MigrationEnd}); len(ends) != 1 || ends[0].State != string(hypervisor.PhaseCompleted) {
		t.Fatalf("%s: migration ends %+v", moved, ends)
	}
}
