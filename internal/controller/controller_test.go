package controller

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// lab builds three 2-core hosts; host a carries three 1-vCPU VMs at the given
// utilisation (0.9 each overloads it: 2.7 cores of demand on 2).
func lab(t *testing.T, mode Mode, util float64) (*Controller, *memory.Driver, *store.Log) {
	t.Helper()
	var hs []hypervisor.Host
	var hcs []HostConfig
	for _, id := range []string{"a", "b", "c"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	for _, vm := range []string{"v1", "v2", "v3"} {
		if err := d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 256, State: hypervisor.StateRunning}, memory.Usage{CPUUtil: util}); err != nil {
			t.Fatal(err)
		}
	}
	log, err := store.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	c, err := New(Config{Interval: 10 * time.Second, Mode: mode, Hosts: hcs}, d, log)
	if err != nil {
		t.Fatal(err)
	}
	return c, d, log
}

func where(t *testing.T, d *memory.Driver) map[string]string {
	vms, err := d.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range vms {
		out[v.ID] = v.Host
	}
	return out
}

func kinds(t *testing.T, log *store.Log, vm string) []string {
	es, err := log.List(store.Filter{VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

func TestDryRunChangesNothing(t *testing.T) {
	c, d, log := lab(t, DryRun, 0.9)
	before := where(t, d)
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cy.Plan.Moves) == 0 {
		t.Fatal("an overloaded host produced no plan")
	}
	d.Advance(time.Minute)
	after := where(t, d)
	for vm, h := range before {
		if after[vm] != h {
			t.Errorf("dry-run moved %s from %s to %s", vm, h, after[vm])
		}
	}
	if len(c.InFlight()) != 0 || len(cy.Started) != 0 {
		t.Errorf("dry-run started migrations: %v", cy.Started)
	}
	skipped, _ := log.List(store.Filter{Kind: store.Skipped})
	decided, _ := log.List(store.Filter{Kind: store.Decision})
	if len(decided) == 0 || len(skipped) != len(decided) || !strings.Contains(skipped[0].Message, "dry-run") {
		t.Errorf("%d decisions, %d dry-run skips: want one skip per decision", len(decided), len(skipped))
	}
}

func TestAutoMigratesOffTheOverloadedHostAndLogsIt(t *testing.T) {
	c, d, log := lab(t, Auto, 0.9)
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cy.Started) != 1 {
		t.Fatalf("started %v; the per-host limit allows one move off host a", cy.Started)
	}
	vm := cy.Started[0]
	d.Advance(10 * time.Second)
	c.Wait()
	if h := where(t, d)[vm]; h == "a" {
		t.Errorf("%s still on a", vm)
	}
	got := kinds(t, log, vm)
	want := []string{store.Decision, store.MigrationStart, MigrationVerify, store.MigrationEnd}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events of %s: %v, want %v", vm, got, want)
	}
	ends, _ := log.List(store.Filter{VM: vm, Kind: store.MigrationEnd})
	e := ends[0]
	// 256 MiB over a 100 MiB/s link (faster with the parallel streams the chooser may
	// pick) with a 300 ms stop-and-copy.
	if e.State != string(hypervisor.PhaseCompleted) || e.Seconds < 0.5 || e.Seconds > 3 || e.DataMiB < 200 || e.DowntimeMs > 300 {
		t.Errorf("end event %+v: want completed in 0.5-3 s with >= 200 MiB sent and <= 300 ms downtime", e)
	}
	if e.Options == nil || e.Options.PredictedSeconds <= 0 || e.Options.MaxDowntimeMs != 300 {
		t.Errorf("end event options %+v: want the chooser's prediction and the 300 ms limit", e.Options)
	}
	dec, _ := log.List(store.Filter{VM: vm, Kind: store.Decision})
	if dec[0].Reason == nil || dec[0].Reason.Rule != "overload" || dec[0].Options == nil || dec[0].Options.MaxDowntimeMs != 300 {
		t.Errorf("decision %+v: want the overload reason and the options", dec[0])
	}
}

func TestConcurrencyLimitsAndNoDoubleMigration(t *testing.T) {
	c, d, _ := lab(t, Auto, 0.9)
	c.cfg.MaxPerHost = 3
	c.cfg.MaxConcurrent = 1
	cy, _ := c.Step(context.Background())
	if len(cy.Started) != 1 {
		t.Fatalf("started %v with max_concurrent 1", cy.Started)
	}
	// A second cycle while it is in flight starts nothing more and never the same VM.
	cy2, _ := c.Step(context.Background())
	if len(cy2.Started) != 0 {
		t.Errorf("second cycle started %v while one was in flight at the cluster limit", cy2.Started)
	}
	d.Advance(10 * time.Second)
	c.Wait()
}

func TestUnreachableHostIsLoggedAndOthersServed(t *testing.T) {
	c, d, log := lab(t, Auto, 0.9)
	d.SetUnreachable("c", true)
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fails, _ := log.List(store.Filter{Kind: store.Failure})
	found := false
	for _, f := range fails {
		if f.Host == "c" {
			found = true
		}
	}
	if !found {
		t.Errorf("no failure event names host c: %+v", fails)
	}
	if len(cy.Started) != 1 {
		t.Fatalf("started %v: host b should still take the move", cy.Started)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	if h := where(t, d)[cy.Started[0]]; h != "b" {
		t.Errorf("moved to %s, want b (c is down)", h)
	}
	// Verified by the two hosts that matter; c's silence is noted, not a failure.
	ends, _ := log.List(store.Filter{VM: cy.Started[0], Kind: store.MigrationEnd})
	if len(ends) != 1 || ends[0].State != string(hypervisor.PhaseCompleted) || ends[0].Error != "" || !strings.Contains(ends[0].Message, "not asked: c") {
		t.Errorf("end events %+v: want completed, noting that c was not asked", ends)
	}
}

func TestRefusedAndFailedMigrationsAreLogged(t *testing.T) {
	c, d, log := lab(t, Auto, 0.9)
	for _, vm := range []string{"v1", "v2", "v3"} {
		d.FailNext(vm, errors.New("internal error: unable to execute QEMU command 'migrate'"))
	}
	cy, _ := c.Step(context.Background())
	d.Advance(10 * time.Second)
	c.Wait()
	if len(cy.Started) == 0 {
		t.Fatal("nothing started")
	}
	ends, _ := log.List(store.Filter{Kind: store.MigrationEnd})
	if len(ends) == 0 || ends[0].State != string(hypervisor.PhaseFailed) || !strings.Contains(ends[0].Error, "QEMU") {
		t.Errorf("end events %+v: want a failed migration with libvirt's reason", ends)
	}
	// A VM that vanished: the driver refuses, the controller logs it and goes on.
	c2, d2, log2 := lab(t, Auto, 0.9)
	_ = d2
	c2.drv = vanishing{c2.drv}
	c2.Step(context.Background())
	// The start is logged before the hypervisor is asked, so the refusal ends it.
	fails, _ := log2.List(store.Filter{Kind: store.MigrationEnd})
	if len(fails) == 0 || !strings.Contains(fails[0].Error, "vm not found") || fails[0].Message != "migration refused" || fails[0].State != store.StateFailed {
		t.Errorf("ends %+v: want the vanished VM's refusal logged", fails)
	}
}

// vanishing reports VMs but refuses to migrate them, as if they were just destroyed.
type vanishing struct{ hypervisor.Driver }

func (v vanishing) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	return nil, hypervisor.ErrVMNotFound
}

func TestApproveModeWaitsForApproval(t *testing.T) {
	c, d, log := lab(t, Approve, 0.9)
	cy, _ := c.Step(context.Background())
	if len(cy.Started) != 0 || len(c.Pending()) == 0 {
		t.Fatalf("approve mode started %v, pending %v", cy.Started, c.Pending())
	}
	vm := c.Pending()[0].VMInstanceID
	if err := c.ApproveVM("nope"); err == nil {
		t.Error("approving a move that is not pending must fail")
	}
	if err := c.ApproveVM(vm); err != nil {
		t.Fatal(err)
	}
	cy, _ = c.Step(context.Background())
	if len(cy.Started) != 1 || cy.Started[0] != vm {
		t.Errorf("after approval started %v, want [%s]", cy.Started, vm)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	if got := kinds(t, log, vm); !strings.Contains(strings.Join(got, ","), store.Approved) {
		t.Errorf("events %v lack the approval", got)
	}
}

func TestReconcileAfterRestart(t *testing.T) {
	c, d, log := lab(t, Auto, 0.2)
	// A previous controller started v1 a->b and died; v1 did reach b.
	log.Append(store.Event{Kind: store.MigrationStart, VM: "v1", Source: "a", Target: "b"})
	log.Append(store.Event{Kind: store.MigrationStart, VM: "v2", Source: "a", Target: "c"})
	m, err := d.Migrate(context.Background(), "v1", "b", model.StateTransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Advance(10 * time.Second)
	m.Wait(context.Background())
	if err := c.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec, _ := log.List(store.Filter{Kind: store.Reconciled})
	states := map[string]string{}
	for _, e := range rec {
		states[e.VM] = e.State
	}
	if states["v1"] != "completed" || states["v2"] != "failed" {
		t.Errorf("reconciled %v: want v1 completed (on b), v2 failed (still on a)", states)
	}
	if open, _ := log.InFlight(); len(open) != 0 {
		t.Errorf("still in flight after reconciling: %+v", open)
	}
}

func TestDrainEmptiesAHostAndKeepsAntiAffinity(t *testing.T) {
	c, d, _ := lab(t, Auto, 0.2)
	c.cfg.MaxPerHost, c.cfg.MaxConcurrent = 3, 3
	// v1 and v2 must not share a host: with a drained, one goes to b and one to c.
	c.cfg.Rules = []model.Rule{{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"v1", "v2"}}}
	plan, err := c.Drain(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Moves) != 3 {
		t.Fatalf("drain planned %d moves, want 3", len(plan.Moves))
	}
	d.Advance(30 * time.Second)
	c.Wait()
	w := where(t, d)
	for vm, h := range w {
		if h == "a" {
			t.Errorf("%s still on the drained host", vm)
		}
	}
	if w["v1"] == w["v2"] {
		t.Errorf("v1 and v2 both on %s despite their anti-affinity rule", w["v1"])
	}
	if _, err := c.Drain(context.Background(), "zz"); err == nil {
		t.Error("draining an unknown host must fail")
	}
}

// unrated drops the rates of chosen VMs' samples, as a driver does for a VM's
// first sample on the host it just moved to.
type unrated struct {
	hypervisor.Driver
	vms map[string]bool
}

func (u unrated) Stats(ctx context.Context) (hypervisor.Stats, error) {
	st, err := u.Driver.Stats(ctx)
	for i := range st.VMs {
		if s := &st.VMs[i]; u.vms[s.VM] {
			s.Interval, s.CPUUtil, s.CPUCores = 0, 0, 0
			s.NetRxKBps, s.NetTxKBps, s.DiskRdKBps, s.DiskWrKBps = 0, 0, 0, 0
		}
	}
	return st, err
}

// TestUnratedSampleKeepsTheLastDemand: a cycle where a VM's sample has no rate
// sees the VM at its last measured CPU, network and disk, not idle, and its host
// as loaded.
func TestUnratedSampleKeepsTheLastDemand(t *testing.T) {
	c, d, _ := lab(t, DryRun, 0.6)
	if err := d.SetUsage("v1", memory.Usage{CPUUtil: 0.6, NetKBps: 400, DiskKBps: 200}); err != nil {
		t.Fatal(err)
	}
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	util := cy.Snapshot.Hosts[0].Util
	c.drv = unrated{d, map[string]bool{"v1": true}}
	d.Advance(10 * time.Second)
	cy, err = c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v1 := cy.Snapshot.VMs[0]
	if v1.ID != "v1" || v1.Demand.CPU != 600 || len(v1.History) != 0 {
		t.Errorf("v1 without a rate: demand %v history %v, want its last 600 and no new history", v1.Demand.CPU, v1.History)
	}
	if v1.Demand.Net != 400 || v1.Demand.Disk != 200 {
		t.Errorf("v1 without a rate: net %v disk %v KB/s, want its last 400 and 200", v1.Demand.Net, v1.Demand.Disk)
	}
	if u := cy.Snapshot.Hosts[0].Util; u != util {
		t.Errorf("host a utilisation %v with v1 unrated, want %v as before", u, util)
	}
}

// TestForecastsCappedAtSize: VMs that swing between idle and flat out leave wide
// bounds, and a climbing one an upward trend; neither may forecast more CPU than
// its vCPUs can use or more memory than it has.
func TestForecastsCappedAtSize(t *testing.T) {
	c, d, _ := lab(t, DryRun, 0.5)
	ctx := context.Background()
	var cy Cycle
	for i := range 30 {
		swing := []float64{0.1, 1}[i%2]
		d.SetUsage("v1", memory.Usage{CPUUtil: swing, MemMiB: 256 * swing})
		d.SetUsage("v2", memory.Usage{CPUUtil: min(1, 0.2+0.04*float64(i)), MemMiB: 256})
		d.Advance(10 * time.Second)
		var err error
		if cy, err = c.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(cy.Forecasts) != len(cy.Snapshot.VMs) {
		t.Fatalf("%d forecasts for %d VMs", len(cy.Forecasts), len(cy.Snapshot.VMs))
	}
	for i, f := range cy.Forecasts {
		size := cy.Snapshot.VMs[i].Size
		if len(f.PredictedCPU) == 0 || len(f.Upper) == 0 {
			t.Fatalf("%s: no forecast %+v", f.VMInstanceID, f)
		}
		for k := range f.PredictedCPU {
			if f.PredictedCPU[k] > size.CPU || f.Upper[k].CPU > size.CPU || f.PredictedMemory[k] > size.Mem || f.Upper[k].Mem > size.Mem {
				t.Errorf("%s step %d: cpu %.0f (upper %.0f), mem %.0f (upper %.0f); size %+v",
					f.VMInstanceID, k, f.PredictedCPU[k], f.Upper[k].CPU, f.PredictedMemory[k], f.Upper[k].Mem, size)
			}
		}
	}
}

// Every VM in the snapshot carries the transfer model's estimate of its move,
// and the configured bandwidth cap both lengthens it and goes into the options.
func TestMoveEstimatesAndBandwidthCap(t *testing.T) {
	c, _, _ := lab(t, Auto, 0.9)
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range cy.Snapshot.VMs {
		if !(v.MigrationSeconds > 0) {
			t.Fatalf("%s: migration estimate %v", v.ID, v.MigrationSeconds)
		}
	}
	fast := cy.Snapshot.VMs[0].MigrationSeconds

	c2, _, log := lab(t, Auto, 0.9)
	c2.cfg.MaxBandwidthMiBps = 8
	cy, err = c2.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// 256 MiB at 8 MiB/s is 32 s at least.
	if slow := cy.Snapshot.VMs[0].MigrationSeconds; !(slow >= 32 && slow > 4*fast) {
		t.Errorf("estimate %v s capped at 8 MiB/s, %v s uncapped", slow, fast)
	}
	if len(cy.Started) == 0 {
		t.Fatal("no move started")
	}
	es, err := log.List(store.Filter{VM: cy.Started[0], Kind: store.MigrationStart})
	if err != nil || len(es) == 0 || es[0].Options == nil || es[0].Options.BandwidthMiBps != 8 {
		t.Errorf("start events %+v (%v): want options with an 8 MiB/s cap", es, err)
	}
}

func TestConfigRejectsBadBandwidthAndDay(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.MaxBandwidthMiBps = -1 }, "max_bandwidth_mibps"},
		{func(c *Config) { c.MaxBandwidthMiBps = math.NaN() }, "max_bandwidth_mibps"},
		{func(c *Config) { c.ForecastDay = -time.Second }, "forecast_day"},
		{func(c *Config) { c.Hosts[0].Capacity.CPU = math.NaN() }, "hosts[0]"},
	} {
		cfg := Config{Hosts: []HostConfig{{ID: "a", URI: "mem://a"}}}
		cfg.Defaults()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want it to name %s", err, c.want)
		}
	}
}
