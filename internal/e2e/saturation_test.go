package e2e

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/store"
)

// The saturation scenario. Each lab host is given 0.9 of a core. host0 runs a
// steady guest (512 MiB, 50 % of its vCPU) and a small one (112 MiB) whose load
// climbs from 5 % to 65 % by 10 points every 7 s and then holds: together they
// come to well over the host even when the machine is busy, while the small guest
// alone stays under the policies' thresholds. host1 and host2 are empty. The
// controller runs every 3 s in auto mode.
//
// The rising guest is the one both policies should move: it frees the most CPU per
// second of migration (headroom's choice) and has the least memory (MMT's).
const (
	interval   = 3 * time.Second
	hostShare  = 0.9 // of a core
	rampTrace  = "cpu=0.05,0.15,0.25,0.35,0.45,0.55,0.65 step=7s loop=false"
	rampTop    = 42 * time.Second
	holdTime   = 15 * time.Second
	settleTime = 9 * time.Second // controller cycles before the ramp: forecasts start from history
	// maxDowntime is the downtime limit the controller gives every move.
	maxDowntime = 300 * time.Millisecond
)

// proactive is the headroom policy for the scenario: move when there is a 10 %
// chance that the host passes 90 % of its CPU within the next four cycles. A
// steady guest's forecast is tight and a climbing one's is wide, so this fires on
// the climb, not on a host that is merely busy.
const proactive = `
horizon: 12s
confidence: 0.9
overload: {threshold: 0.9, probability: 0.1}
underload: {enabled: false}
lead_time: {margin: 10s}
anti_thrash: {cooldown: 10m, max_per_cycle: 2}
`

// sample is one controller cycle's view of host0.
type sample struct {
	at     float64 // seconds since the ramp started (negative before)
	dt     float64 // seconds the measurement covers
	util   float64 // host0: its guests' measured CPU over its capacity
	demand float64 // both guests' measured CPU wherever they run, over one host's capacity
	on     string  // where the rising guest runs
}

type scenarioResult struct {
	policy    string
	samples   []sample
	saturated float64 // seconds host0 spent at or above capacity
	firstSat  float64 // ramp seconds of the first saturated sample; NaN if none
	migStart  float64 // ramp seconds the rising guest's migration started; NaN if none
	migEnd    *store.Event
	// holdDemand is the guests' combined demand, in hosts, while the trace holds
	// its top (the median: the first sample after a guest arrives on a host
	// reads high, see the README).
	holdDemand float64
	log        *store.Log
	target     string
	migrations int // of either guest
}

// runScenario boots the two guests, runs the controller with policy while the load
// rises, and measures host0 until the trace has held its top for a few cycles.
func runScenario(t *testing.T, l *lab.Lab, policy, tag string) scenarioResult {
	t.Helper()
	steady, rise := "steady-"+tag, "rise-"+tag
	boot(t, l, 0,
		lab.VMSpec{Name: steady, MemoryMiB: 512, Args: "headroom.cpu=0.5 headroom.dirty_mib=8 headroom.dirty_rate=4"},
		lab.VMSpec{Name: rise, MemoryMiB: 112, Args: "headroom.cpu=0.05 headroom.dirty_mib=8 headroom.dirty_rate=4 headroom.loop=0"})
	capacity := hostShare * coreMHz(t, l)
	// A driver of its own: the controller's first rates must not span the gap
	// between the two.
	settle(t, newDriver(t, l, capacity), "host0", 0.8)
	drv := newDriver(t, l, capacity)
	c, log := newController(t, l, drv, controller.Config{
		Interval: interval, Mode: controller.Auto, Policy: policy,
		MaxConcurrent: 2, MaxPerHost: 1, MaxDowntime: maxDowntime,
	})

	var mu sync.Mutex
	var samples []sample
	var rampAt time.Time // zero until the ramp is steered in
	last := time.Now()
	done := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- c.Run(ctx, func(cy controller.Cycle, err error) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Logf("cycle: %v", err)
				return
			}
			s := sample{dt: now.Sub(last).Seconds(), at: math.NaN()}
			last = now
			if !rampAt.IsZero() {
				s.at = now.Sub(rampAt).Seconds()
			}
			snap := cy.Snapshot
			for _, h := range snap.Hosts {
				if h.ID == "host0" {
					s.util = h.Util
				}
			}
			for _, v := range snap.VMs {
				if v.ID != steady && v.ID != rise || v.Host < 0 {
					continue
				}
				s.demand += v.Demand.CPU / capacity
				if v.ID == rise && s.on == "" {
					s.on = snap.Hosts[v.Host].ID
				}
			}
			var moves []string
			for _, m := range cy.Plan.Moves {
				moves = append(moves, m.VMInstanceID+"->"+m.TargetHostID)
			}
			var utils []string
			for _, h := range snap.Hosts {
				utils = append(utils, fmt.Sprintf("%s %.2f", h.ID, h.Util))
			}
			t.Logf("%s t=%6.1fs util %s, demand %.2f, %s on %s, moves %v, started %v",
				tag, s.at, strings.Join(utils, ", "), s.demand, rise, s.on, moves, cy.Started)
			if rampAt.IsZero() {
				return
			}
			samples = append(samples, s)
			// Past the top of the ramp: the guests' combined demand has shown
			// whether host0 would have saturated had nothing moved.
			if s.at > (rampTop + holdTime).Seconds() {
				select {
				case done <- struct{}{}:
				default:
				}
			}
		})
	}()

	time.Sleep(settleTime)
	mu.Lock()
	rampAt = time.Now()
	mu.Unlock()
	// Steered where it runs: a policy may have moved it already.
	at := locate(t, drv, rise).Host
	if r, err := l.Steer(context.Background(), hostIndex(t, l, at), rise, rampTrace); err != nil {
		t.Fatalf("steer %s on %s: %q %v", rise, at, r, err)
	}
	select {
	case <-done:
	case <-time.After(rampTop + holdTime + time.Minute):
		t.Errorf("%s: the scenario did not end", tag)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("run: %v", err)
	}
	c.Wait()

	mu.Lock()
	defer mu.Unlock()
	res := scenarioResult{policy: policy, samples: samples, firstSat: math.NaN(), migStart: math.NaN(), log: log}
	var hold []float64
	for _, s := range samples {
		if s.at >= rampTop.Seconds() {
			hold = append(hold, s.demand)
		}
		if s.util >= 1 {
			res.saturated += s.dt
			if math.IsNaN(res.firstSat) {
				res.firstSat = s.at
			}
		}
	}
	if len(hold) > 0 {
		slices.Sort(hold)
		res.holdDemand = hold[len(hold)/2]
	}
	res.migrations = len(list(t, log, store.Filter{Kind: store.MigrationStart}))
	noPanics(t, l, drv, steady, rise)
	for _, e := range list(t, log, store.Filter{VM: rise}) {
		switch {
		case e.Kind == store.MigrationStart && math.IsNaN(res.migStart):
			res.migStart = e.Time.Sub(rampAt).Seconds()
			res.target = e.Target
		case e.Kind == store.MigrationEnd && res.migEnd == nil:
			res.migEnd = &e
		}
	}
	return res
}

// settle waits until host's guests have finished starting up: two samples in a
// row under the given utilisation. For some seconds after boot a guest's kernel
// uses far more CPU than its trace, which would start the scenario overloaded.
func settle(t *testing.T, d hypervisor.Driver, host string, below float64) {
	t.Helper()
	ctx := context.Background()
	d.Stats(ctx)
	var seen []string
	calm := 0
	for range 30 {
		time.Sleep(2 * time.Second)
		hs, err := d.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vms, err := d.VMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		snap := hypervisor.Snapshot(0, hs, vms, st)
		for _, h := range snap.Hosts {
			if h.ID != host {
				continue
			}
			seen = append(seen, fmt.Sprintf("%.2f", h.Util))
			if calm++; h.Util >= below {
				calm = 0
			}
		}
		if calm >= 2 {
			t.Logf("%s settled: utilisation %v", host, seen)
			return
		}
	}
	t.Fatalf("%s did not settle under %.2f: %v", host, below, seen)
}

// line is the grep-able summary of a run.
func (r scenarioResult) line() string {
	return fmt.Sprintf("E2E-SATURATION policy=%s saturated_s=%.1f first_saturated_at_s=%s migrated_at_s=%s migrations=%d hold_demand=%.2f",
		shortPolicy(r.policy), r.saturated, seconds(r.firstSat), seconds(r.migStart), r.migrations, r.holdDemand)
}

// shortPolicy names a policy without its file.
func shortPolicy(p string) string {
	if strings.HasPrefix(p, "headroom:") {
		return "headroom"
	}
	return p
}

// seconds formats a time in a summary line; NaN is "none".
func seconds(x float64) string {
	if math.IsNaN(x) {
		return "none"
	}
	return fmt.Sprintf("%.1f", x)
}

// noPanics fails for each guest whose kernel panicked after a move. (A panicked
// guest spins a full core, so the figures would include that loop.)
func noPanics(t *testing.T, l *lab.Lab, drv hypervisor.Driver, guests ...string) {
	t.Helper()
	for _, g := range guests {
		if loc, err := drv.Locate(context.Background(), g); err == nil && loc.Host != "" {
			if con, _ := l.Console(hostIndex(t, l, loc.Host), g); strings.Contains(con, "Kernel panic") {
				t.Errorf("%s's kernel panicked on %s after a move; the figures include its panic loop", g, loc.Host)
			}
		}
	}
}

// TestProactiveMigration is the acceptance scenario: headroom moves the rising
// guest off host0 before host0's measured CPU reaches its capacity, the guest keeps
// running on its new host, and the event log holds the decision and the measured
// migration.
func TestProactiveMigration(t *testing.T) {
	l := lab.Shared(t)
	r := runScenario(t, l, writePolicy(t, proactive), "hr")
	t.Log(r.line())
	dump(t, r.log)
	rise := "rise-hr"
	if math.IsNaN(r.migStart) {
		t.Fatalf("headroom never moved %s", rise)
	}
	if !math.IsNaN(r.firstSat) && r.migStart >= r.firstSat {
		t.Errorf("migration started at %.1f s, after host0 saturated at %.1f s", r.migStart, r.firstSat)
	}
	// Not vacuous: had the guests stayed together they would have overfilled host0.
	if r.holdDemand < 1 {
		t.Errorf("the guests' combined demand at the top of the trace was %.2f of a host: the scenario never threatened host0", r.holdDemand)
	}

	drv := newDriver(t, l, 0)
	loc := locate(t, drv, rise)
	if loc.Host == "" || loc.Host == "host0" || loc.States["host0"].Active() {
		t.Fatalf("%s: %+v, want it off host0 (moved to %s)", rise, loc, r.target)
	}
	// The guest's console on its new host shows it kept working after the move.
	line, err := l.WaitProgress(context.Background(), hostIndex(t, l, loc.Host), rise, 2, 30*time.Second)
	if err != nil {
		t.Fatalf("%s after the move: %v", rise, err)
	}
	if !strings.Contains(line, " bad=0") {
		t.Errorf("guest memory lost writes in the move: %s", line)
	}
	t.Logf("%s on %s after the move: %s", rise, loc.Host, line)

	// The event log: the decision with its reason and options, the start, and the
	// measured end.
	var dec, start *store.Event
	for _, e := range list(t, r.log, store.Filter{VM: rise}) {
		switch {
		case e.Kind == store.Decision && dec == nil:
			dec = &e
		case e.Kind == store.MigrationStart && start == nil:
			start = &e
		}
	}
	if dec == nil || start == nil || r.migEnd == nil {
		t.Fatalf("events of %s: decision %v, start %v, end %v", rise, dec, start, r.migEnd)
	}
	if dec.Reason == nil || dec.Reason.Rule != "overload" || dec.Source != "host0" || dec.Target != r.target || dec.Mode != string(controller.Auto) {
		t.Errorf("decision %+v", dec)
	}
	// The options: the downtime limit the controller was given, and a transfer mode,
	// decided with the move and used for it unchanged.
	if dec.Options == nil || start.Options == nil || *start.Options != *dec.Options ||
		dec.Options.MaxDowntimeMs != float64(maxDowntime.Milliseconds()) || dec.Options.Mode == "" {
		t.Errorf("options: decision %+v, start %+v, want a mode and max downtime %v", dec.Options, start.Options, maxDowntime)
	}
	end := r.migEnd
	if end.State != string(hypervisor.PhaseCompleted) || end.Error != "" || end.Seconds <= 0 || end.DowntimeMs <= 0 || end.DataMiB <= 0 {
		t.Errorf("migration end %+v: want completed with measured seconds, downtime and data", end)
	}
	t.Logf("%s: decided %q with %+v; moved %s -> %s in %.1f s, downtime %.0f ms, %.0f MiB",
		rise, dec.Reason.Detail, *dec.Options, end.Source, end.Target, end.Seconds, end.DowntimeMs, end.DataMiB)
}

// TestReactiveThreshold runs the same scenario with CloudSim's THR-MMT at 0.8, to
// measure how long host0 stays saturated when the controller only reacts.
func TestReactiveThreshold(t *testing.T) {
	l := lab.Shared(t)
	r := runScenario(t, l, "thr-mmt-0.8", "thr")
	t.Log(r.line())
	dump(t, r.log)
}
