package controller

// Issue 14's state machine gaps: verifying, records that gate their step,
// fencing refusals that blame nobody, per-VM backoff; issue 12's live groups.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/ha"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// counting counts the driver calls the state machine must or must not make.
type counting struct {
	hypervisor.Driver
	mu             sync.Mutex
	migrate, adopt int
	refuse         error // Migrate returns it without asking the driver
}

func (c *counting) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	c.mu.Lock()
	c.migrate++
	refuse := c.refuse
	c.mu.Unlock()
	if refuse != nil {
		return nil, refuse
	}
	return c.Driver.Migrate(ctx, vm, target, o)
}

func (c *counting) Adopt(ctx context.Context, vm, target string) (hypervisor.Migration, error) {
	c.mu.Lock()
	c.adopt++
	c.mu.Unlock()
	return c.Driver.Adopt(ctx, vm, target)
}

func (c *counting) calls() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.migrate, c.adopt
}

// failKinds makes the controller's event-log writes of the given kinds fail,
// as on a full disk, until the returned function is called.
func failKinds(c *Controller, kinds ...string) (heal func()) {
	var mu sync.Mutex
	broken := true
	c.appendHook = func(e store.Event) (store.Event, error) {
		mu.Lock()
		b := broken
		mu.Unlock()
		for _, k := range kinds {
			if b && (k == "*" || k == e.Kind) {
				return e, errors.New("write events.db: no space left on device")
			}
		}
		return c.log.Append(e)
	}
	return func() { mu.Lock(); broken = false; mu.Unlock() }
}

func kindsAndStates(t *testing.T, log *store.Log, vm string) []string {
	t.Helper()
	var out []string
	for _, e := range events(t, log, store.Filter{VM: vm}) {
		switch e.Kind {
		case store.Decision, store.Skipped, store.Failure, store.Warning:
			continue
		}
		out = append(out, e.Kind+":"+e.State)
	}
	return out
}

// The verifying state is in the log after the job ends and before the end.
func TestVerifyingIsRecordedBeforeTheEnd(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, d, log)
	cy, err := c.Step(context.Background())
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v)", cy.Started, err)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	got := strings.Join(kindsAndStates(t, log, cy.Started[0]), " ")
	want := "migration-start:started migration-verify:verifying migration-end:completed"
	if got != want {
		t.Fatalf("%s's records: %s, want %s", cy.Started[0], got, want)
	}
	if open, _ := log.InFlight(); len(open) != 0 {
		t.Errorf("open after the end: %+v", open)
	}
}

// A controller killed after recording verifying restarts and closes the record
// by where the VM runs, without adopting a job.
func TestRestartClosesAVerifyingRecordByWhereTheVMRuns(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "b", memory.Usage{CPUUtil: 0.1}, "v1") // the move completed
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.1}, "v2") // this one did not
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	for _, e := range []store.Event{
		{Kind: store.MigrationStart, State: store.StateStarted, VM: "v1", Source: "a", Target: "b"},
		{Kind: store.MigrationStart, State: store.StateStarted, VM: "v2", Source: "a", Target: "c"},
		{Kind: MigrationVerify, State: store.StateVerifying, VM: "v1", Source: "a", Target: "b"},
		{Kind: MigrationVerify, State: store.StateVerifying, VM: "v2", Source: "a", Target: "c"},
	} {
		if _, err := log.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	drv := &counting{Driver: d}
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, drv, log)
	if err := c.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, adopt := drv.calls(); adopt != 0 {
		t.Errorf("%d adopt calls for records whose job had ended", adopt)
	}
	for vm, want := range map[string]string{"v1": store.StateCompleted, "v2": store.StateFailed} {
		if got := lastFinal(t, log, vm); got.Kind != store.Reconciled || got.State != want {
			dumpLog(t, log)
			t.Errorf("%s closed as %s %s, want reconciled %s", vm, got.Kind, got.State, want)
		}
	}
	if open, _ := log.InFlight(); len(open) != 0 {
		t.Errorf("still open: %+v", open)
	}
}

// A start that cannot be written stops the migration: the hypervisor is never
// asked for a move the log does not know. Once the log takes writes again the
// move is made, with no operator.
func TestUnwrittenStartStopsTheMigration(t *testing.T) {
	for _, kind := range []string{store.MigrationStart, "*"} {
		t.Run(kind, func(t *testing.T) {
			hs, hcs := memHosts("a", "b", "c")
			d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
			addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
			log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
			drv := &counting{Driver: d}
			c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, drv, log)
			heal := failKinds(c, kind)
			errs := EventLogErrors()
			ctx := context.Background()
			for range 2 {
				cy, err := c.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n, _ := drv.calls(); n != 0 || len(cy.Started) != 0 {
					t.Fatalf("log full: %d migrate calls, started %v", n, cy.Started)
				}
			}
			if EventLogErrors() <= errs {
				t.Errorf("the failed writes are not counted in the event-log-error metric")
			}
			if w := where(t, d); w["v1"] != "a" || w["v2"] != "a" || w["v3"] != "a" {
				t.Errorf("VMs moved with the log full: %v", w)
			}
			heal()
			cy, err := c.Step(ctx)
			if err != nil || len(cy.Started) != 1 {
				t.Fatalf("log writable again: started %v (%v)", cy.Started, err)
			}
			d.Advance(10 * time.Second)
			c.Wait()
			if got := lastFinal(t, log, cy.Started[0]); got.State != store.StateCompleted {
				t.Errorf("after recovery: %+v", got)
			}
		})
	}
}

// A plan that cannot be written is not acted on either (approve mode: it is
// not queued for approval), and an approval that cannot be written is refused.
func TestUnwrittenPlanAndApprovalStopTheirStep(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	drv := &counting{Driver: d}
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Approve, Hosts: hcs}, drv, log)
	ctx := context.Background()
	heal := failKinds(c, store.Decision)
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if p := c.Pending(); len(p) != 0 {
		t.Fatalf("pending %v although no plan was written", p)
	}
	heal()
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	p := c.Pending()
	if len(p) != 1 {
		t.Fatalf("pending %v, want one", p)
	}
	vm := p[0].VMInstanceID
	heal = failKinds(c, store.Approved)
	if err := c.ApproveBy(vm, "ada"); err == nil || errors.Is(err, ErrNotPending) {
		t.Fatalf("approval with the log full: %v, want an error that is not ErrNotPending", err)
	}
	if err := c.ApproveVM(vm); err == nil {
		t.Fatalf("ApproveVM with the log full took the approval")
	}
	if cy, err := c.Step(ctx); err != nil || len(cy.Started) != 0 {
		t.Fatalf("started %v on an approval the log does not have (%v)", cy.Started, err)
	}
	heal()
	if err := c.ApproveBy(vm, "ada"); err != nil {
		t.Fatal(err)
	}
	if cy, err := c.Step(ctx); err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v after a recorded approval (%v)", cy.Started, err)
	}
	d.Advance(10 * time.Second)
	c.Wait()
}

// An end that cannot be written leaves the VM in place (its record is open)
// and is closed by where the VM runs once the log takes writes again.
func TestUnwrittenEndIsClosedWhenTheLogRecovers(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	drv := &counting{Driver: d}
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, drv, log)
	ctx := context.Background()
	cy, err := c.Step(ctx)
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v)", cy.Started, err)
	}
	vm := cy.Started[0]
	heal := failKinds(c, store.MigrationEnd, store.Reconciled)
	d.Advance(10 * time.Second)
	c.Wait()
	if open, _ := log.InFlight(); len(open) != 1 {
		t.Fatalf("open records %+v, want the move whose end was lost", open)
	}
	// Still unwritable: the VM is not moved again, the record stays open.
	d.SetUsage(vm, memory.Usage{CPUUtil: 1})
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if n, _ := drv.calls(); n != 1 {
		t.Errorf("%d migrate calls while %s's record could not be closed, want 1", n, vm)
	}
	heal()
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	d.Advance(10 * time.Second)
	c.Wait()
	if open, _ := log.InFlight(); len(open) != 0 {
		dumpLog(t, log)
		t.Fatalf("the log writable again, still open: %+v", open)
	}
	var closed bool
	for _, e := range events(t, log, store.Filter{VM: vm, Kind: store.Reconciled}) {
		closed = closed || e.State == store.StateCompleted
	}
	if !closed {
		dumpLog(t, log)
		t.Errorf("%s's record not closed as completed by where it runs", vm)
	}
}

// HA fencing refusals are not failures of a host or a VM: no backoff, no host
// set aside, and no "failed" end.
func TestFencingRefusalBlamesNoHostOrVM(t *testing.T) {
	for _, refuse := range []error{
		fmt.Errorf("fenced migrate of v: %w (lease ran out: %w)", ha.ErrNotLeader, context.DeadlineExceeded),
		fmt.Errorf("fenced migrate of v: %w: v", ha.ErrInFlight),
	} {
		hs, hcs := memHosts("a", "b", "c")
		d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
		addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
		log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
		drv := &counting{Driver: d, refuse: refuse}
		c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs}, drv, log)
		for range 3 {
			cy, err := c.Step(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if g := c.guards(cy.Snapshot); len(g) != 0 {
				t.Fatalf("%v: guards %v after fencing refusals", refuse, g)
			}
		}
		c.mu.Lock()
		nf := len(c.failures)
		c.mu.Unlock()
		if nf != 0 {
			t.Errorf("%v: %d VMs backing off after fencing refusals", refuse, nf)
		}
		for _, e := range events(t, log, store.Filter{}) {
			if e.Kind == store.MigrationEnd && e.State != store.StateAborted || e.Kind == store.HostState ||
				e.Kind == store.Skipped && strings.Contains(e.Message, "backing off") {
				t.Errorf("%v: %s %s %q", refuse, e.Kind, e.State, e.Message)
			}
		}
		if open, _ := log.InFlight(); len(open) != 0 {
			t.Errorf("%v: open records %+v", refuse, open)
		}
		if n, _ := drv.calls(); n < 3 {
			t.Errorf("%v: %d migrate calls in 3 cycles: a refusal must not hold the VM back", refuse, n)
		}
	}
}

// Failures back off per VM: the first is retried at the next cycle, the second
// holds the VM for failure_backoff, doubled with each further one; another
// VM is served meanwhile.
func TestFailedMovesBackOffPerVM(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.9}, "v1", "v2", "v3")
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	// Every move of v1 is refused; v1 is the one the plan picks first.
	drv := &refusing{Driver: d, vm: "v1"}
	c := newCtl(t, Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, MaxPerHost: 2, MaxConcurrent: 2,
		FailureBackoff: time.Minute}, drv, log)
	now := time.Now()
	c.now = func() time.Time { return now }
	ctx := context.Background()
	step := func() {
		t.Helper()
		if _, err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
		d.Advance(10 * time.Second)
		c.Wait()
		now = now.Add(10 * time.Second)
	}
	for drv.calls < 2 {
		step()
		if now.Sub(c.start) > 5*time.Minute {
			t.Skip("the plan never picked v1; the test's load does not fit the policy")
		}
	}
	// Two failures: v1 backs off for a minute.
	calls := drv.calls
	c.mu.Lock()
	until := c.failures["v1"].until
	c.mu.Unlock()
	if got := until.Sub(now.Add(-10 * time.Second)); got != time.Minute {
		t.Errorf("backoff after 2 failures: %v, want failure_backoff (1m)", got)
	}
	pinned := func() bool {
		cy, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range c.guards(cy.Snapshot) {
			if r.Name == "backoff:v1" {
				return true
			}
		}
		return false
	}
	for now.Before(until) {
		if !pinned() {
			t.Fatalf("v1 not held at +%v of its backoff", now.Sub(until.Add(-time.Minute)))
		}
		d.Advance(10 * time.Second)
		c.Wait()
		now = now.Add(10 * time.Second)
	}
	if drv.calls != calls {
		t.Errorf("%d migrate calls of v1 during its backoff", drv.calls-calls)
	}
	if pinned() {
		t.Errorf("v1 still held after its backoff")
	}
	c.Wait()
	// A third failure doubles it.
	c.afterMove("v1", "b", store.StateFailed, "x", errors.New("refused"))
	c.mu.Lock()
	f := *c.failures["v1"]
	c.mu.Unlock()
	if f.n != 3 || f.until.Sub(now) != 2*time.Minute {
		t.Errorf("after %d failures backing off %v, want 3 and 2m", f.n, f.until.Sub(now))
	}
	// The other VMs were served meanwhile.
	var done int
	for _, e := range events(t, log, store.Filter{Kind: store.MigrationEnd}) {
		if e.VM != "v1" && e.State == store.StateCompleted {
			done++
		}
	}
	if done == 0 {
		dumpLog(t, log)
		t.Errorf("no other VM moved while v1 failed")
	}
}

// Groups in the controller config: names checked against the policy file, and
// a group's stricter trigger acts on its VMs live.
func TestGroupsConfig(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(`horizon: 1m
underload: {enabled: false}
overload: {threshold: 0.95, probability: 0.5}
groups:
  latency-critical:
    overload: {threshold: 0.5, probability: 0.5}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	hs, hcs := memHosts("a", "b", "c")
	base := Config{Interval: 10 * time.Second, Mode: Auto, Hosts: hcs, Policy: "headroom:" + pol}
	log := openLog(t, filepath.Join(dir, "events.db"))
	for _, tc := range []struct {
		groups map[string][]string
		policy string
		want   string
	}{
		{map[string][]string{"batch": {"b-*"}}, "", "groups.batch: the policy file defines no such group (it defines: latency-critical)"},
		{map[string][]string{"latency-critical": {"db-["}}, "", `groups.latency-critical[0]: "db-[" is not a glob pattern`},
		{map[string][]string{"latency-critical": nil}, "", "groups.latency-critical: no VM patterns given"},
		{map[string][]string{"latency-critical": {"db-*"}}, "thr-mmt-0.8", "groups: policy"},
	} {
		cfg := base
		cfg.Groups = tc.groups
		if tc.policy != "" {
			cfg.Policy = tc.policy
		}
		_, err := New(cfg, memory.New(memory.Options{}, hs...), log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("groups %v: %v, want %q", tc.groups, err, tc.want)
		}
	}
	// From YAML too: a misspelt key is named.
	if _, err := Parse([]byte("hosts: [{id: a, uri: 'mem://a'}]\ngroups: {g: ['db-[']}\n"), "c.yaml"); err == nil || !strings.Contains(err.Error(), "groups.g[0]") {
		t.Errorf("parse: %v", err)
	}

	// Live: two VMs at 70 % of host a. Without groups the 95 % trigger holds
	// them; with db-* in latency-critical (50 %) one moves.
	run := func(groups map[string][]string) (*Controller, Cycle) {
		d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
		addVMs(t, d, "a", memory.Usage{CPUUtil: 0.7}, "db-1", "web-1")
		cfg := base
		cfg.Groups = groups
		c := newCtl(t, cfg, d, openLog(t, filepath.Join(t.TempDir(), "events.db")))
		var cy Cycle
		for range 3 { // rates need two samples
			var err error
			if cy, err = c.Step(context.Background()); err != nil {
				t.Fatal(err)
			}
			d.Advance(10 * time.Second)
			c.Wait()
			if len(cy.Plan.Moves) > 0 {
				break
			}
		}
		return c, cy
	}
	if _, cy := run(nil); len(cy.Plan.Moves) != 0 {
		t.Fatalf("no groups: moves %v at 70 %% with a 95 %% trigger", cy.Plan.Moves)
	}
	_, cy := run(map[string][]string{"latency-critical": {"db-*"}})
	if len(cy.Plan.Moves) == 0 {
		t.Fatalf("db-1 in latency-critical (50 %% trigger) at 70 %%: no move")
	}
	for _, v := range cy.Snapshot.VMs {
		if want := map[string]string{"db-1": "latency-critical", "web-1": ""}[v.ID]; v.Group != want {
			t.Errorf("%s in group %q, want %q", v.ID, v.Group, want)
		}
	}
}

// A VM whose name matches two groups is in neither, and the error names both.
func TestVMInTwoGroupsIsAnError(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte("groups:\n  x: {overload: {threshold: 0.5, probability: 0.5}}\n  y: {overload: {threshold: 0.6, probability: 0.5}}\n"), 0o644)
	hs, hcs := memHosts("a", "b")
	d := memory.New(memory.Options{}, hs...)
	addVMs(t, d, "a", memory.Usage{CPUUtil: 0.1}, "db-1", "web-1")
	log := openLog(t, filepath.Join(dir, "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Hosts: hcs, Policy: "headroom:" + pol,
		Groups: map[string][]string{"x": {"db-*"}, "y": {"*-1"}}}, d, log)
	for range 2 {
		cy, err := c.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range cy.Snapshot.VMs {
			if want := map[string]string{"db-1": "", "web-1": "y"}[v.ID]; v.Group != want {
				t.Errorf("%s in group %q, want %q", v.ID, v.Group, want)
			}
		}
	}
	var n int
	for _, e := range events(t, log, store.Filter{VM: "db-1", Kind: store.Failure}) {
		if strings.Contains(e.Message, "groups x and y") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d errors naming db-1's two groups, want one", n)
	}
}
