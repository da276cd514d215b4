package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
	"github.com/headroom/headroom/internal/transfer"
)

// slowestLinksAllPairs is the O(hosts²) loop slowestLinks replaced, kept as
// the reference it must agree with.
func slowestLinksAllPairs(links *transfer.Estimates, hosts []model.Host) []transfer.Link {
	slowest := make([]transfer.Link, len(hosts))
	for s, src := range hosts {
		for t, dst := range hosts {
			if s == t {
				continue
			}
			l := links.Link(transfer.Pair{Source: src.ID, Target: dst.ID})
			if slowest[s].MiBps == 0 || l.MiBps < slowest[s].MiBps {
				slowest[s] = l
			}
		}
	}
	return slowest
}

// TestSlowestLinksMatchesAllPairs compares the two on random fleets: learned
// pairs faster and slower than the prior, ties (to check the first in host
// order wins), pairs of hosts not in the snapshot, hosts whose every pair is
// learned, and a repeated host ID.
func TestSlowestLinksMatchesAllPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := range 300 {
		n := rng.IntN(12)
		hosts := make([]model.Host, n)
		for i := range hosts {
			hosts[i].ID = fmt.Sprintf("h%d", i)
		}
		if n > 3 && rng.IntN(5) == 0 {
			hosts[n-1].ID = hosts[rng.IntN(n-1)].ID
		}
		links := transfer.NewEstimates(transfer.DefaultLinkConfig())
		speeds := []float64{100, 500, 1100, transfer.DefaultLinkMiBps, 2000}
		pairs := rng.IntN(n*n + 1)
		for range pairs {
			src := fmt.Sprintf("h%d", rng.IntN(n+2)) // some outside the snapshot
			dst := fmt.Sprintf("h%d", rng.IntN(n+2))
			links.Set(transfer.Pair{Source: src, Target: dst}, transfer.Link{MiBps: speeds[rng.IntN(len(speeds))], SetupSeconds: 0.1 + float64(rng.IntN(4))})
		}
		if n > 1 && rng.IntN(4) == 0 { // a host with every pair out of it learned
			for j := 1; j < n; j++ {
				links.Set(transfer.Pair{Source: hosts[0].ID, Target: hosts[j].ID}, transfer.Link{MiBps: speeds[rng.IntN(len(speeds))], SetupSeconds: float64(j)})
			}
		}
		c := &Controller{links: links}
		got, want := c.slowestLinks(hosts), slowestLinksAllPairs(links, hosts)
		if len(got) != len(want) {
			t.Fatalf("trial %d: %d links, want %d", trial, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("trial %d (%d hosts, %d pairs set): host %d (%s): %+v, want %+v", trial, n, pairs, i, hosts[i].ID, got[i], want[i])
			}
		}
	}
}

// gatedDriver checks, when a migration is asked for, that the event log
// already holds the VM's decision and start: written in one transaction with
// other events (eventBatch), they must still be on disk before the step.
type gatedDriver struct {
	*memory.Driver
	t      *testing.T
	log    *store.Log
	starts int
}

func (g *gatedDriver) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	g.starts++
	es, err := g.log.List(store.Filter{VM: vm})
	if err != nil {
		g.t.Error(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Kind+":"+e.State)
	}
	if want := store.Decision + ":" + store.StatePlanned + " " + store.MigrationStart + ":" + store.StateStarted; !strings.HasSuffix(strings.Join(got, " "), want) {
		g.t.Errorf("migration of %s asked for with its events %v; want them to end %q", vm, got, want)
	}
	return g.Driver.Migrate(ctx, vm, target, o)
}

func TestBatchedEventsPrecedeTheirSteps(t *testing.T) {
	c, d, log := lab(t, Auto, 0.9)
	c.cfg.MaxPerHost = 3
	g := &gatedDriver{Driver: d, t: t, log: log}
	c.drv = g
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g.starts == 0 || len(cy.Started) == 0 {
		t.Fatalf("no migration started (plan %+v); the test checks nothing", cy.Plan.Moves)
	}
	d.Advance(time.Minute)
	c.Wait()
	// Every decision of the cycle is in the log, one per move.
	dec, _ := log.List(store.Filter{Kind: store.Decision})
	if len(dec) != len(cy.Plan.Moves) {
		t.Errorf("%d decisions logged for %d moves", len(dec), len(cy.Plan.Moves))
	}
}

// TestObserveInParallelMatchesSequential feeds the same fleet's samples to two
// controllers' engines, one through observe (split among workers) and one VM
// after VM as the cycle did before, and wants the same forecasts and dirty-rate
// forecasts. 5,000 VMs are enough for observe to split them.
func TestObserveInParallelMatchesSequential(t *testing.T) {
	const nh, per = 500, 10
	rng := rand.New(rand.NewPCG(3, 5))
	snap := model.Snapshot{Interval: 300}
	var stats hypervisor.Stats
	for h := range nh {
		snap.Hosts = append(snap.Hosts, model.Host{ID: fmt.Sprintf("h%d", h)})
	}
	for i := range nh * per {
		v := model.VM{ID: fmt.Sprintf("v%d", i), Host: i / per, Size: model.Resources{CPU: 4000, Mem: 8192}}
		if i%7 != 0 { // some without a rate this cycle
			v.History = []float64{0}
		}
		snap.VMs = append(snap.VMs, v)
		stats.VMs = append(stats.VMs, hypervisor.VMStats{VM: v.ID, Host: snap.Hosts[v.Host].ID, Interval: time.Duration(i%5) * time.Second})
	}
	newCtl := func() *Controller {
		c, err := New(Config{Interval: 5 * time.Minute, Hosts: []HostConfig{{ID: "h0", URI: "memory://h0"}}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	par, seq := newCtl(), newCtl()
	fp, ok := par.pol.(core.Forecasting)
	if !ok {
		t.Fatalf("the default policy %T does not forecast; the test checks nothing", par.pol)
	}
	steps := fp.HorizonSteps(snap.Interval)
	for cycle := range 6 {
		for i := range snap.VMs {
			v := &snap.VMs[i]
			v.Demand = model.Resources{CPU: 4000 * rng.Float64(), Mem: 8192 * rng.Float64(), Net: 100 * rng.Float64(), Disk: 50 * rng.Float64()}
			stats.VMs[i].DirtyMiBps = 64 * rng.Float64()
		}
		got := par.observe(&snap, stats)
		// The sequential reference: the interval as one batch, in VM order.
		var rated []*forecast.VM
		var demand []model.Resources
		for _, v := range snap.VMs {
			if len(v.History) > 0 {
				rated = append(rated, seq.eng.VM(v.ID))
				demand = append(demand, v.Demand)
			}
		}
		seq.eng.ObserveBatch(rated, demand)
		for i, v := range snap.VMs {
			want := seq.eng.VM(v.ID).Forecast(steps, fp.Confidence())
			want.Clamp(v.Size)
			if !reflect.DeepEqual(got[i], want) {
				t.Fatalf("cycle %d, VM %s: forecast %+v, want %+v", cycle, v.ID, got[i], want)
			}
			if stats.VMs[i].Interval > 0 {
				seq.dirty.VM(v.ID).Observe(model.CPU, stats.VMs[i].DirtyMiBps)
			}
		}
		for _, v := range snap.VMs[:50] {
			g, gok := par.dirty.Forecast(v.ID, 1, 0.9)
			w, wok := seq.dirty.Forecast(v.ID, 1, 0.9)
			if gok != wok || !reflect.DeepEqual(g, w) {
				t.Fatalf("cycle %d, VM %s: dirty-rate forecast %+v, want %+v", cycle, v.ID, g, w)
			}
		}
	}
}
