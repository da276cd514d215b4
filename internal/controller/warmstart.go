package controller

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// Event kinds of a stats source that keeps history (Prometheus).
const (
	// WarmStart: VMs' histories were backfilled before their first forecast.
	WarmStart = "warm-start"
	// Hold: a host was left out of a cycle because its stats were stale or
	// missing; nothing moves from or to it on partial data.
	Hold = "hold"
)

// Backfiller is a driver that can read each VM's past demand, for a warm
// start: up to n samples at step, oldest first, ending before the present
// sample; fn may be called from several goroutines at once.
type Backfiller interface {
	Backfill(ctx context.Context, vms []hypervisor.VM, step time.Duration, n int, fn func(vm string, d []model.Resources)) (int, error)
}

// Holder is a driver whose Stats can be incomplete for some hosts: Held
// names them, with the reason, as of the latest Stats call.
type Holder interface {
	Held() map[string]string
}

// holdCounter counts holds (the Prometheus driver does).
type holdCounter interface{ Holds() uint64 }

// Holds is how many host-cycles were held for stale or missing stats since
// the driver started (0 for a driver that never holds).
func (c *Controller) Holds() uint64 {
	if h, ok := c.drv.(holdCounter); ok {
		return h.Holds()
	}
	return 0
}

// historyLen is the forecast engine's history per series: a week at the
// interval, as forecast.Config's default capacity.
func (c *Controller) historyLen() int {
	day := c.cfg.ForecastDay.Seconds()
	step := c.cfg.Interval.Seconds()
	week := int(7*day/step + 0.5)
	if week < 4 {
		week = 0
	}
	return max(week, 128-64) + 64
}

// fromSource runs after a cycle's stats are read. With a Backfiller, VMs the
// forecast engine has not seen yet get their history first (all of them on
// the first cycle), so the first forecasts already know the daily pattern.
// With a Holder, held hosts and their VMs leave the cycle, logged with the
// reason, as an unreachable host does.
func (c *Controller) fromSource(ctx context.Context, up []hypervisor.Host, vms []hypervisor.VM) ([]hypervisor.Host, []hypervisor.VM) {
	if b, ok := c.drv.(Backfiller); ok {
		c.warmStart(ctx, b, vms)
	}
	h, ok := c.drv.(Holder)
	if !ok {
		return up, vms
	}
	held := h.Held()
	if len(held) == 0 {
		return up, vms
	}
	keep := up[:0:0]
	for _, x := range up {
		if why, ok := held[x.ID]; ok {
			c.record(store.Event{Kind: Hold, Host: x.ID, Message: "hold: no moves from or to this host this cycle: " + why})
			continue
		}
		keep = append(keep, x)
	}
	kept := vms[:0:0]
	for _, v := range vms {
		if _, ok := held[v.Host]; !ok {
			kept = append(kept, v)
		}
	}
	return keep, kept
}

func (c *Controller) warmStart(ctx context.Context, b Backfiller, vms []hypervisor.VM) {
	if _, ok := c.pol.(core.Forecasting); !ok {
		return
	}
	var fresh []hypervisor.VM
	for _, v := range vms {
		if v.State == hypervisor.StateRunning && c.eng.Lookup(v.ID) == nil {
			fresh = append(fresh, v)
		}
	}
	if len(fresh) == 0 {
		return
	}
	t0 := time.Now()
	n := c.historyLen()
	var samples atomic.Int64
	got, err := b.Backfill(ctx, fresh, c.cfg.Interval, n, func(id string, d []model.Resources) {
		vm := c.eng.VM(id)
		for _, x := range d {
			vm.ObserveAll(x)
		}
		samples.Add(int64(len(d)))
	})
	if err != nil {
		c.record(store.Event{Kind: store.Failure, Error: err.Error(), Message: "warm start: backfill failed; VMs without history start cold"})
	}
	c.record(store.Event{Kind: WarmStart, Message: fmt.Sprintf("backfilled %d samples of %d of %d new VMs (up to %d at %v) in %v",
		samples.Load(), got, len(fresh), n, c.cfg.Interval, time.Since(t0).Round(time.Millisecond))})
}
