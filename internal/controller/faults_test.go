package controller

// Faults found running the controller as an operator would (issue 11), pinned
// down against the in-memory cluster.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// memHosts are 2-core hosts of 1000 MHz cores and 8 GiB.
func memHosts(ids ...string) ([]hypervisor.Host, []HostConfig) {
	var hs []hypervisor.Host
	var hcs []HostConfig
	for _, id := range ids {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, HostConfig{ID: id, URI: "mem://" + id})
	}
	return hs, hcs
}

func addVMs(t *testing.T, d *memory.Driver, host string, u memory.Usage, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := d.AddVM(hypervisor.VM{ID: id, Host: host, VCPUs: 1, MemMiB: 256}, u); err != nil {
			t.Fatal(err)
		}
	}
}

// openLog opens the event log at path, closed when the test ends.
func openLog(t *testing.T, path string) *store.Log {
	t.Helper()
	log, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return log
}

func newCtl(t *testing.T, cfg Config, d hypervisor.Driver, log *store.Log) *Controller {
	t.Helper()
	c, err := New(cfg, d, log)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func events(t *testing.T, log *store.Log, f store.Filter) []store.Event {
	t.Helper()
	es, err := log.List(f)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func dumpLog(t *testing.T, log *store.Log) {
	t.Helper()
	for _, e := range events(t, log, store.Filter{}) {
		t.Logf("#%d %s vm=%s %s->%s host=%s state=%s msg=%q err=%q downtime=%v", e.Seq, e.Kind, e.VM, e.Source, e.Target, e.Host, e.State, e.Message, e.Error, e.DowntimeMs)
	}
}

// lastFinal is the final state the log gives vm's latest migration: its last
// migration-end or reconciled event.
func lastFinal(t *testing.T, log *store.Log, vm string) store.Event {
	t.Helper()
	var last store.Event
	for _, e := range events(t, log, store.Filter{VM: vm}) {
		if e.Kind == store.MigrationEnd || e.Kind == store.Reconciled {
			last = e
		}
	}
	return last
}

// Defect 1: a controller killed mid-migration and restarted must follow the
// job libvirt still runs to its end and record the real outcome, and never start
// a second migration of the VM.
func TestRestartFollowsTheRunningJob(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	path := filepath.Join(t.TempDir(), "events.db")
	cfg := Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}
	ctx := context.Background()

	logA, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := newCtl(t, cfg, d, logA)
	cy, err := a.Step(ctx)
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("first controller started %v (%v)", cy.Started, err)
	}
	vm := cy.Started[0]
	d.Advance(time.Second) // part way: 100 of 256 MiB
	// SIGKILL: nothing more reaches the log from the first controller.
	logA.Close()

	log := openLog(t, path)
	b := newCtl(t, cfg, d, log)
	if err := b.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// While the job runs, the new controller must not start it again.
	if _, err := b.Step(ctx); err != nil {
		t.Fatal(err)
	}
	d.Advance(10 * time.Second)
	b.Wait()
	loc, err := d.Locate(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	final := lastFinal(t, log, vm)
	if loc.Host == "a" || final.State != string(hypervisor.PhaseCompleted) || final.Target != loc.Host {
		dumpLog(t, log)
		t.Fatalf("%s runs on %s; the log's last word: %s %s->%s %q", vm, loc.Host, final.State, final.Source, final.Target, final.Message)
	}
	if n := len(events(t, log, store.Filter{VM: vm, Kind: store.MigrationStart})); n != 1 {
		dumpLog(t, log)
		t.Errorf("%d migration starts of %s, want the first controller's only", n, vm)
	}
	if open, _ := log.InFlight(); len(open) != 0 {
		t.Errorf("unfinished after the restart: %+v", open)
	}
}

// halfDown lists a host (as the libvirt driver did from its cached node info)
// but fails every other call to it, as a host whose libvirtd died does.
type halfDown struct {
	hypervisor.Driver
	host string
}

func (h halfDown) err(op string) error {
	return &hypervisor.HostError{Host: h.host, URI: "mem://" + h.host, Op: op, Err: fmt.Errorf("%w: connection refused", hypervisor.ErrUnreachable)}
}

func (h halfDown) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vms, err := h.Driver.VMs(ctx)
	var out []hypervisor.VM
	for _, v := range vms {
		if v.Host != h.host {
			out = append(out, v)
		}
	}
	return out, errors.Join(err, h.err("list vms"))
}

func (h halfDown) Stats(ctx context.Context) (hypervisor.Stats, error) {
	st, err := h.Driver.Stats(ctx)
	var vs []hypervisor.VMStats
	for _, v := range st.VMs {
		if v.Host != h.host {
			vs = append(vs, v)
		}
	}
	st.VMs = vs
	return st, errors.Join(err, h.err("stats"))
}

// Defect 2: a host that fails to answer is not a target, even while it is still
// listed. Host b is full, so c is the only room; c stopped answering, so the
// overloaded VMs on a must stay.
func TestNoMovesOntoAHostThatStoppedAnswering(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	addVMs(t, d, "b", memory.Usage{CPUUtil: 0.95}, "w1", "w2")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, halfDown{d, "c"}, log)
	defer c.Wait()
	for range 3 {
		if _, err := c.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		d.Advance(10 * time.Second)
	}
	for _, e := range events(t, log, store.Filter{Kind: store.Decision}) {
		if e.Target == "c" {
			dumpLog(t, log)
			t.Fatalf("a move was planned onto c, which does not answer: %+v", e)
		}
	}
	named := false
	for _, e := range events(t, log, store.Filter{Kind: store.Failure}) {
		named = named || (e.Host == "c" && strings.Contains(e.Error, "connection refused"))
	}
	if !named {
		t.Error("no failure names c with its error")
	}
}

// Defect 2, the other half: a target whose migration failed with a connection
// error is set aside, and the VM's next move goes to another host, while the
// host answers the controller's reads. It is used again after its cool-down.
func TestConnectionFailureSetsTheTargetAside(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	for _, v := range []string{"v1", "v2", "v3"} {
		d.FailNext(v, errors.New("operation failed: job 'migration out' failed: Unable to write to socket: Connection reset by peer"))
	}
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, d, log)
	ctx := context.Background()
	cy, err := c.Step(ctx)
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v)", cy.Started, err)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	ends := events(t, log, store.Filter{Kind: store.MigrationEnd})
	if len(ends) != 1 || ends[0].State != string(hypervisor.PhaseFailed) {
		t.Fatalf("ends %+v", ends)
	}
	dead := ends[0].Target
	for range 2 {
		cy, err = c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d.Advance(10 * time.Second)
		c.Wait()
	}
	for _, e := range events(t, log, store.Filter{Kind: store.Decision})[1:] {
		if e.Target == dead {
			dumpLog(t, log)
			t.Fatalf("after a connection failure to %s, a move was planned onto it again: %+v", dead, e)
		}
	}
	if done := events(t, log, store.Filter{Kind: store.MigrationEnd}); done[len(done)-1].State != string(hypervisor.PhaseCompleted) {
		dumpLog(t, log)
		t.Fatalf("no move completed to the other host")
	}
}

// Defect 3: with one host silent (its calls never answer), a cycle costs the
// collection deadline, once, and the other hosts are served.
func TestSilentHostCostsTheDeadlineOnce(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	const iv = 300 * time.Millisecond // the collection deadline
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, CollectTimeout: iv}, d, log)
	d.SetHung("c", true)
	for i := range 2 {
		done := make(chan Cycle, 1)
		t0 := time.Now()
		go func() {
			cy, _ := c.Step(context.Background())
			done <- cy
		}()
		var cy Cycle
		select {
		case cy = <-done:
		case <-time.After(iv + 2*time.Second):
			t.Fatalf("cycle %d still running %v after it started, with host c silent", i, time.Since(t0))
		}
		if took := time.Since(t0); took > iv+time.Second {
			t.Errorf("cycle %d took %v", i, took)
		}
		if cy.Snapshot == nil || len(cy.Snapshot.Hosts) != 2 {
			t.Fatalf("cycle %d: snapshot %+v, want hosts a and b", i, cy.Snapshot)
		}
		if i == 0 && len(cy.Started) != 1 {
			t.Errorf("cycle %d started %v: b should take a move", i, cy.Started)
		}
		d.Advance(10 * time.Second)
	}
	c.Wait()
	named := false
	for _, e := range events(t, log, store.Filter{Kind: store.Failure}) {
		named = named || (e.Host == "c" && strings.Contains(e.Error, "deadline"))
	}
	if !named {
		dumpLog(t, log)
		t.Error("no failure names the silent host c")
	}
}

// Defect 4: a migration past its timeout is aborted through the hypervisor and
// logged aborted, not running; the VM is free to move again afterwards. A move
// that never switched over has no downtime.
func TestTimedOutMigrationIsAborted(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100, Realtime: true}, hs...)
	t.Cleanup(func() { d.Close() })
	// Dirtying faster than the link: it never converges.
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9, DirtyMiBps: 1000}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, MigrationTimeout: 300 * time.Millisecond}, d, log)
	ctx := context.Background()
	cy, err := c.Step(ctx)
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v)", cy.Started, err)
	}
	vm := cy.Started[0]
	c.Wait()
	end := lastFinal(t, log, vm)
	if end.State != "aborted" || !strings.Contains(end.Error+end.Message, "timeout") || end.DowntimeMs != 0 {
		dumpLog(t, log)
		t.Fatalf("end %+v: want aborted for the timeout, with no downtime", end)
	}
	if err := d.Abort(ctx, vm); !errors.Is(err, hypervisor.ErrNoMigration) {
		t.Errorf("after the aborted end the hypervisor still migrates %s: %v", vm, err)
	}
}

// failedDowntime reports a failed migration with downtime, as libvirt's stats
// of a failed job may carry the downtime limit.
type failedDowntime struct{ hypervisor.Driver }

type downtimeMig struct{ hypervisor.Migration }

func (m downtimeMig) Wait(ctx context.Context) (hypervisor.Result, error) {
	res, err := m.Migration.Wait(ctx)
	if err != nil {
		res.Downtime = 300 * time.Millisecond
	}
	return res, err
}

func (f failedDowntime) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	m, err := f.Driver.Migrate(ctx, vm, target, o)
	if err != nil {
		return nil, err
	}
	return downtimeMig{m}, nil
}

func TestFailedMoveHasNoDowntime(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	for _, v := range []string{"v1", "v2", "v3"} {
		d.FailNext(v, errors.New("internal error: qemu unexpectedly closed the monitor"))
	}
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, failedDowntime{d}, log)
	if _, err := c.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	ends := events(t, log, store.Filter{Kind: store.MigrationEnd})
	if len(ends) != 1 || ends[0].State != string(hypervisor.PhaseFailed) || ends[0].DowntimeMs != 0 {
		t.Fatalf("ends %+v: want one failed, with no downtime", ends)
	}
}

// firstUnrated gives no rates on its first Stats call, as the libvirt driver's
// first sample of a VM has none.
type firstUnrated struct {
	hypervisor.Driver
	calls int
}

func (f *firstUnrated) Stats(ctx context.Context) (hypervisor.Stats, error) {
	st, err := f.Driver.Stats(ctx)
	if f.calls++; f.calls == 1 {
		for i := range st.VMs {
			s := &st.VMs[i]
			s.Interval, s.CPUUtil, s.CPUCores = 0, 0, 0
		}
	}
	return st, err
}

// Defect 7: a drain by a fresh process places by measured demand. b's guests use
// 1.9 of its 2 cores; c has room for one of a's guests only (memory), so the
// other must stay rather than go to b, which the first sample shows as idle.
func TestDrainMeasuresBeforePlacing(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	hs[2].Capacity.Mem = 400
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.5}, "v1", "v2")
	addVMs(t, d, "b", memory.Usage{CPUUtil: 0.95}, "w1", "w2")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 4 * time.Second, Mode: DryRun, Hosts: hcs, MaxPerHost: 3, MaxConcurrent: 3}, &firstUnrated{Driver: d}, log)
	plan, err := c.Drain(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range plan.Moves {
		if m.TargetHostID == "b" {
			t.Errorf("drain placed %s on b, whose guests use 1.9 of its 2 cores", m.VMInstanceID)
		}
	}
	if len(plan.Moves) != 1 || len(plan.Unplaced) != 1 {
		t.Errorf("plan %+v: want one move to c and one VM left", plan)
	}
}

// Defect 8: a must rule naming a VM that no host runs is accepted (it binds
// when the VM appears) but said so at start.
func TestRuleNamingAnAbsentVMIsReported(t *testing.T) {
	hs, hcs := memHosts("a", "b")
	d := memory.New(memory.Options{}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.1}, "v1", "v2")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	rule := model.Rule{Name: "db-apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"v1", "db-2"}}
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: DryRun, Hosts: hcs, Rules: []model.Rule{rule}}, d, log)
	if _, err := c.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events(t, log, store.Filter{}) {
		found = found || (strings.Contains(e.Message, "db-apart") && strings.Contains(e.Message, "db-2"))
	}
	if !found {
		dumpLog(t, log)
		t.Error("nothing says that rule db-apart names db-2, which no host runs")
	}
}

// refusing refuses every migration of one VM at once, as libvirt does when the
// target holds a stale definition of it, and counts the attempts.
type refusing struct {
	hypervisor.Driver
	vm    string
	calls int
}

func (r *refusing) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	if vm == r.vm {
		r.calls++
		return nil, fmt.Errorf("operation failed: domain '%s' already exists with uuid 8e4f1b2a-0000-4000-8000-000000000001", vm)
	}
	return r.Driver.Migrate(ctx, vm, target, o)
}

// Defects 5 and 6: a drain whose move keeps failing retries a bounded number
// of times with a backoff, then ends with an error that names the VM left and
// why; every line of its output names its VM.
func TestDrainGivesUpAndNamesWhatStays(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100, Realtime: true}, hs...)
	t.Cleanup(func() { d.Close() })
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.2}, "v1", "v2")
	drv := &refusing{Driver: d, vm: "v2"}
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, MaxPerHost: 2, MaxConcurrent: 2,
		FailureBackoff: 100 * time.Millisecond}, drv, log)
	var out strings.Builder
	t0 := time.Now()
	err := c.DrainHost(context.Background(), "a", &out)
	took := time.Since(t0)
	t.Logf("drain output:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "v2") || !strings.Contains(err.Error(), "already exists") || strings.Contains(err.Error(), "v1") {
		t.Errorf("drain error %v: want one naming v2 and libvirt's reason, not v1", err)
	}
	if drv.calls != drainAttempts || took > 5*time.Second {
		t.Errorf("%d attempts to move v2 in %v: want %d, backing off between", drv.calls, took, drainAttempts)
	}
	if n := len(events(t, log, store.Filter{})); n > 40 {
		t.Errorf("%d events for a two-VM drain", n)
	}
	if loc, _ := d.Locate(context.Background(), "v1"); loc.Host == "a" {
		t.Errorf("v1 still on a")
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(line, "v1") && !strings.Contains(line, "v2") {
			t.Errorf("output line %q names no VM", line)
		}
	}

	// Dry-run: a VM the plan cannot place is named, and the drain fails.
	hs, hcs = memHosts("a", "b")
	d2 := memory.New(memory.Options{}, hs...)
	addVMs(t, d2, "a", memory.Usage{CPUUtil: 0.2}, "w1")
	addVMs(t, d2, "b", memory.Usage{CPUUtil: 0.95}, "w2", "w3")
	c2 := newCtl(t, Config{Interval: 10 * time.Second, Mode: DryRun, Hosts: hcs}, d2, openLog(t, filepath.Join(t.TempDir(), "events.db")))
	out.Reset()
	err = c2.DrainHost(context.Background(), "a", &out)
	if err == nil || !strings.Contains(err.Error(), "w1") || !strings.Contains(out.String(), "w1 stays") {
		t.Errorf("dry-run drain with nowhere to go: %v; output %q", err, out.String())
	}
}

// The circuit breaker's cool-down ends: a host set aside after a connection
// failure is a target again once it has passed.
func TestHostSetAsideForItsCooldown(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.2}, "v1")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, d, log)
	now := time.Now()
	c.now = func() time.Time { return now }
	cy, err := c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	aside := func() []string {
		var out []string
		for _, r := range c.guards(cy.Snapshot) {
			out = append(out, r.Name)
		}
		return out
	}
	c.afterMove("v1", "b", store.StateFailed, "x", errors.New("Cannot recv data: Connection reset by peer"))
	if got := aside(); len(got) != 1 || got[0] != "aside:b" {
		t.Fatalf("guards %v after a connection failure to b", got)
	}
	now = now.Add(c.cfg.HostCooldown + time.Second)
	if got := aside(); len(got) != 0 {
		t.Errorf("guards %v after b's cool-down", got)
	}
	// A second failure in a row sets it aside twice as long; a refusal that is
	// not the host's fault does not.
	c.afterMove("v1", "b", store.StateFailed, "x", errors.New("unable to connect to server at 'b:16509': Connection refused"))
	now = now.Add(c.cfg.HostCooldown + time.Second)
	if got := aside(); len(got) != 1 {
		t.Errorf("guards %v one cool-down into a doubled one", got)
	}
	c.afterMove("v1", "c", store.StateFailed, "x", errors.New("internal error: unable to execute QEMU command 'migrate'"))
	for _, r := range c.guards(cy.Snapshot) {
		if r.Name == "aside:c" {
			t.Errorf("c set aside for a failure that was not its connection's")
		}
	}
}

// Issue 14: a migration that moves no data for stall_timeout is aborted.
func TestStalledMigrationIsAborted(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...) // no Advance: no data moves
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, StallTimeout: 300 * time.Millisecond}, d, log)
	cy, err := c.Step(context.Background())
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v)", cy.Started, err)
	}
	time.Sleep(time.Second)
	d.Advance(10 * time.Millisecond) // the cancelled job ends
	c.Wait()
	end := lastFinal(t, log, cy.Started[0])
	if end.State != store.StateAborted || !strings.Contains(end.Message, "stalled") {
		dumpLog(t, log)
		t.Fatalf("end %+v: want aborted as stalled", end)
	}
}
