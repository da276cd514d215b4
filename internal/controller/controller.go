// Package controller is the live shell around the decision core: every interval it
// reads the hosts through a hypervisor.Driver, feeds the prediction engine, calls the
// same core.Decide as the simulator, and carries out the plan within concurrency
// limits, writing every decision, migration and failure to the event log.
package controller

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
	"github.com/headroom/headroom/internal/transfer"
)

// Controller runs the loop. Its methods are safe for concurrent use.
type Controller struct {
	cfg Config
	drv hypervisor.Driver
	pol core.Policy
	log *store.Log
	eng *forecast.Engine
	// dirty forecasts each VM's memory dirty rate (MiB/s), the fifth series, for the
	// window a migration would take.
	dirty *forecast.Engine
	// chooser picks each migration's options; links learns each host pair's rate.
	chooser transfer.Chooser
	links   *transfer.Estimates
	start   time.Time
	now     func() time.Time

	mu       sync.Mutex
	inflight map[string]hypervisor.Migration // by VM
	pending  map[string]model.MigrationRequest
	approved map[string]bool
	lastMove map[string]time.Time
	// lastRates is each VM's CPU, network and disk demand at its last sample
	// with a rate (memory is a level, measured without one).
	lastRates map[string]model.Resources
	// hosts is each host's health as a migration target, failures each VM's
	// run of failed moves (collect.go); unsettled the open migration records
	// whose outcome the hosts cannot tell yet (migration.go).
	hosts     map[string]*hostHealth
	failures  map[string]*vmFailures
	unsettled map[string]store.Event
	// rulesChecked: the rules were checked against the running VMs once.
	rulesChecked bool
	wg           sync.WaitGroup
	// ha is set when the controller is one of several replicas (ha.go).
	ha *haState
	// seen is when and where each VM was last listed (forget.go).
	seen map[string]lastSeen
	// groups map VM names to policy groups (groups.go).
	groups *groupMap
	// appendHook, if set, writes events instead of the log (tests: a full disk).
	appendHook func(store.Event) (store.Event, error)
}

// New builds a controller. The policy comes from cfg.Policy.
func New(cfg Config, drv hypervisor.Driver, log *store.Log) (*Controller, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pol, err := core.ParsePolicy(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	steps := 6
	if fp, ok := pol.(core.Forecasting); ok {
		steps = fp.HorizonSteps(cfg.Interval.Seconds())
	}
	eng, err := forecast.NewEngine(forecast.Config{Step: cfg.Interval.Seconds(), Horizon: steps, Day: cfg.ForecastDay.Seconds()})
	if err != nil {
		return nil, err
	}
	// The dirty rate is forecast two steps ahead to choose a move's options, where
	// the weekly cycle adds nothing the last day does not: a day of history
	// (a fifth of the memory of a week's) is enough.
	day := cfg.ForecastDay.Seconds()
	if day <= 0 {
		day = 86400
	}
	dirty, err := forecast.NewEngine(forecast.Config{Step: cfg.Interval.Seconds(), Horizon: 2, Day: cfg.ForecastDay.Seconds(),
		Capacity: int(math.Ceil(day/cfg.Interval.Seconds())) + 64})
	if err != nil {
		return nil, err
	}
	groups, err := newGroupMap(cfg.Groups, pol)
	if err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, drv: drv, pol: pol, log: log, eng: eng, dirty: dirty, start: time.Now(), now: time.Now, groups: groups,
		chooser: transfer.NewChooser(transfer.DefaultModel()), links: transfer.NewEstimates(transfer.DefaultLinkConfig()),
		inflight: map[string]hypervisor.Migration{}, pending: map[string]model.MigrationRequest{},
		approved: map[string]bool{}, lastMove: map[string]time.Time{}, lastRates: map[string]model.Resources{},
		hosts: map[string]*hostHealth{}, failures: map[string]*vmFailures{}, unsettled: map[string]store.Event{}}, nil
}

// record appends e to the event log. A failed write is counted (the
// event-log-error metric) and printed; the error is returned so that a step
// gated on its record (a plan, an approval, a start) is not taken: a move the
// log does not know of would be one a restart cannot adopt.
func (c *Controller) record(e store.Event) error {
	if e.Mode == "" {
		e.Mode = string(c.currentMode()) // view.go: a mode set through the API
	}
	if e.Time.IsZero() {
		e.Time = c.now()
	}
	add := c.log.Append
	if c.appendHook != nil {
		add = c.appendHook
	}
	if _, err := add(e); err != nil {
		eventLogErrors.Add(1) // view.go; exported as a metric
		// The log is how operators learn what happened; losing it is worth a loud line.
		fmt.Printf("headroom: event log: %s %s not written: %v\n", e.Kind, e.VM, err)
		return err
	}
	return nil
}

// gate records e, the record a step needs first; if the write fails it says
// which step is skipped and why, and reports false. The step is decided again
// next cycle, so moves resume by themselves once the log can be written.
func (c *Controller) gate(e store.Event, step string) bool {
	err := c.record(e)
	if err != nil {
		fmt.Printf("headroom: %s of %s skipped: its %s record could not be written to the event log (%v); retried next cycle\n",
			step, e.VM, e.State, err)
	}
	return err == nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Cycle is what one Step saw and did.
type Cycle struct {
	Snapshot *model.Snapshot
	// Forecasts are the decision core's, one per snapshot VM (none for a policy
	// that does not forecast).
	Forecasts []model.ResourceForecast
	Plan      core.Plan
	Started   []string // VMs whose migration started
}

// Step runs one cycle: observe, decide, act.
func (c *Controller) Step(ctx context.Context) (Cycle, error) {
	var cy Cycle
	// The moves in flight as of before the cluster is read: one that ends while
	// the listing runs would otherwise leave its VM on the source in the snapshot
	// yet free to move, and the plan would be made for a placement that is gone.
	inflight := c.inflightNow()
	// Hosts, VMs and stats at once, within the collection deadline; a host
	// that fails any of them is left out (collect.go).
	r, err := c.read(ctx)
	if err != nil {
		return cy, err
	}
	up, vms, stats := r.up, r.vms, r.stats
	c.checkRules(r)
	c.forget(r) // forget.go
	c.settleUnsettled(ctx)
	up, vms = c.fromSource(ctx, up, vms) // warm start and holds (warmstart.go)
	now := c.now()
	snap := hypervisor.Snapshot(now.Sub(c.start).Seconds(), up, vms, stats)
	snap.Interval = c.cfg.Interval.Seconds()
	cy.Snapshot = &snap
	c.carryDemand(&snap)
	c.decorate(&snap, inflight)
	c.estimateMoves(&snap)
	// The configured rules, and the controller's guards: no move onto a host
	// set aside, none of a VM backing off or whose last move is unsettled.
	snap.Rules = append(slices.Clip(c.cfg.Rules), c.guards(&snap)...)

	forecasts := c.observe(&snap, stats) // collect.go
	cy.Forecasts = forecasts
	plan := core.Decide(&snap, forecasts, c.pol, requests(inflight))
	cy.Plan = plan
	cy.Started = c.act(ctx, &snap, plan, inflight)
	return cy, nil
}

// estimateMoves gives every VM the transfer model's estimate of how long moving
// it would take now, for the core's lead time and move cost: its memory, the
// upper bound of its dirty-rate forecast, and the slowest learned link out of its
// host (the target is not chosen yet; the slowest keeps the lead time safe),
// capped at the configured bandwidth.
func (c *Controller) estimateMoves(snap *model.Snapshot) {
	slowest := c.slowestLinks(snap.Hosts) // collect.go
	for s := range snap.Hosts {
		if cp := c.cfg.MaxBandwidthMiBps; cp > 0 && (slowest[s].MiBps == 0 || slowest[s].MiBps > cp) {
			slowest[s].MiBps = cp
		}
	}
	for i := range snap.VMs {
		v := &snap.VMs[i]
		if v.Host < 0 || len(snap.Hosts) < 2 {
			continue
		}
		in := c.dirtyInput(*v)
		v.MigrationSeconds = c.chooser.Model.PredictSeconds(in.MemMiB, in.DirtyUpperMiBps, slowest[v.Host])
	}
}

// dirtyInput is the transfer model's input for vm with its dirty-rate forecast:
// the migration window is about one interval ahead, so plan for the bound, not
// the mean.
func (c *Controller) dirtyInput(vm model.VM) transfer.Input {
	in := transfer.VMInput(vm)
	if f, ok := c.dirty.Forecast(vm.ID, 1, 0.9); ok && len(f.PredictedCPU) > 0 {
		in.DirtyMiBps = max(f.PredictedCPU[0], 0)
		in.DirtyUpperMiBps = max(f.Upper[0].CPU, in.DirtyMiBps)
	}
	return in
}

// carryDemand gives a VM whose sample has no rate this cycle (its first on the
// host it just moved to, or one the driver could not time) the CPU, network and
// disk demand of its last rated sample instead of none: its load did not stop, and a host that
// looks emptier than it is draws moves it cannot take.
func (c *Controller) carryDemand(snap *model.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	for i := range snap.VMs {
		v := &snap.VMs[i]
		seen[v.ID] = true
		if len(v.History) > 0 {
			c.lastRates[v.ID] = model.Resources{CPU: v.Demand.CPU, Net: v.Demand.Net, Disk: v.Demand.Disk}
			continue
		}
		last, ok := c.lastRates[v.ID]
		if !ok || v.Host < 0 {
			continue
		}
		if h := &snap.Hosts[v.Host]; h.Capacity.CPU > 0 {
			h.Util += (last.CPU - v.Demand.CPU) / h.Capacity.CPU
		}
		v.Demand.CPU, v.Demand.Net, v.Demand.Disk = last.CPU, last.Net, last.Disk
	}
	for id := range c.lastRates {
		if !seen[id] {
			delete(c.lastRates, id)
		}
	}
}

// decorate adds what the driver does not know: power curves, labels, when each VM
// last moved, and the moves in flight.
func (c *Controller) decorate(snap *model.Snapshot, inflight map[string]hypervisor.Migration) {
	cfgByID := map[string]HostConfig{}
	for _, h := range c.cfg.Hosts {
		cfgByID[h.ID] = h
	}
	hostIx := map[string]int{}
	for i := range snap.Hosts {
		h := &snap.Hosts[i]
		hostIx[h.ID] = i
		hc := cfgByID[h.ID]
		h.Labels = hc.Labels
		for k := range h.Power {
			h.Power[k] = hc.IdleWatts + (hc.MaxWatts-hc.IdleWatts)*float64(k)/10
		}
	}
	c.assignGroups(snap) // groups.go
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range snap.VMs {
		vm := &snap.VMs[i]
		if t, ok := c.lastMove[vm.ID]; ok {
			vm.LastMigration = t.Sub(c.start).Seconds()
		}
		if m, ok := inflight[vm.ID]; ok {
			// A move that ended since inflight was taken may show the VM on its
			// target already.
			if h, ok := hostIx[m.Target()]; ok && h != vm.Host && !slices.Contains(vm.MigratingTo, h) {
				vm.MigratingTo = append(vm.MigratingTo, h)
				snap.Hosts[h].VMs = append(snap.Hosts[h].VMs, i)
			}
		}
	}
}

// inflightNow copies the moves in flight.
func (c *Controller) inflightNow() map[string]hypervisor.Migration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.inflight)
}

func requests(inflight map[string]hypervisor.Migration) []model.MigrationRequest {
	var out []model.MigrationRequest
	for vm, m := range inflight {
		out = append(out, model.MigrationRequest{VMInstanceID: vm, TargetHostID: m.Target(), StateTransferOptions: m.Options()})
	}
	return out
}

// act logs the plan and, by mode, starts, parks or skips each move.
func (c *Controller) act(ctx context.Context, snap *model.Snapshot, plan core.Plan, planned map[string]hypervisor.Migration) []string {
	if c.ha != nil { // ha.go: only the elected replica acts
		if !c.haAct(ctx) {
			return nil
		}
		defer c.haSave(ctx)
	}
	// The decisions and skips are written in one transaction (collect.go),
	// all before dispatch starts any move.
	ev := &eventBatch{c: c}
	for _, u := range plan.Unplaced {
		vm := snap.VMs[u.VM]
		ev.add(store.Event{Kind: store.NoSuitableHost, VM: vm.ID, Source: snap.Hosts[vm.Host].ID, Message: u.Reason})
	}
	moves := append([]model.MigrationRequest(nil), plan.Moves...)
	sort.SliceStable(moves, func(i, j int) bool { return moves[i].Priority > moves[j].Priority })
	var queue []model.MigrationRequest
	for i := range moves {
		m := &moves[i]
		m.StateTransferOptions = c.options(snap, *m)
		src := snap.Hosts[snap.VMs[m.VM].Host].ID
		r := m.Reason
		ev.add(store.Event{Kind: store.Decision, State: store.StatePlanned, VM: m.VMInstanceID, Source: src, Target: m.TargetHostID, Reason: &r, Options: &m.StateTransferOptions})
		switch c.cfg.Mode {
		case DryRun:
			ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Source: src, Target: m.TargetHostID, Message: "dry-run: would migrate"})
		case Approve:
			if !ev.gate(m.VMInstanceID, "the move") { // an approval may follow at once: the decision first
				continue
			}
			c.mu.Lock()
			ok := c.approved[m.VMInstanceID]
			if ok {
				delete(c.approved, m.VMInstanceID)
				delete(c.pending, m.VMInstanceID)
			} else {
				c.pending[m.VMInstanceID] = *m
			}
			c.mu.Unlock()
			if ok {
				queue = append(queue, *m)
			} else {
				ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Source: src, Target: m.TargetHostID, Message: "awaiting approval"})
			}
		case Auto:
			queue = append(queue, *m)
		}
	}
	return c.dispatch(ctx, snap, queue, planned, ev)
}

// options are the state-transfer options of a move, chosen by the transfer model from
// the VM's measured dirty rate and the learned link between the two hosts, within the
// downtime limit; the target's configured migrate URI wins over the chooser's.
func (c *Controller) options(snap *model.Snapshot, m model.MigrationRequest) model.StateTransferOptions {
	vm := snap.VMs[m.VM]
	src := snap.Hosts[vm.Host]
	in := c.dirtyInput(vm)
	in.Policy = transfer.Policy{MaxDowntimeMs: float64(c.cfg.MaxDowntime.Milliseconds()), PostCopy: c.cfg.AllowPostCopy,
		MaxBandwidthMiBps: c.cfg.MaxBandwidthMiBps}
	in.Link = c.links.Link(transfer.Pair{Source: src.ID, Target: m.TargetHostID})
	in.SourceLabels = src.Labels
	if m.Target >= 0 && m.Target < len(snap.Hosts) {
		in.TargetLabels = snap.Hosts[m.Target].Labels
	}
	o, _ := c.chooser.Choose(in)
	for _, h := range c.cfg.Hosts {
		if h.ID == m.TargetHostID && h.MigrateURI != "" {
			o.MigrateURI = h.MigrateURI
		}
	}
	return o
}

// dispatch starts moves in priority order within the limits; a VM already moving
// is never started again. The per-host limits also count the moves that were in
// flight when the snapshot was taken (planned), even if they have ended since: the
// snapshot does not show their effect, so the plan is a cycle out of date on those
// hosts.
func (c *Controller) dispatch(ctx context.Context, snap *model.Snapshot, queue []model.MigrationRequest, planned map[string]hypervisor.Migration, ev *eventBatch) []string {
	defer ev.flush()
	var started []string
	for _, m := range queue {
		src := snap.Hosts[snap.VMs[m.VM].Host].ID
		c.mu.Lock()
		_, busy := c.inflight[m.VMInstanceID]
		_, unsettled := c.unsettled[m.VMInstanceID]
		fails := c.failures[m.VMInstanceID]
		backoff := fails != nil && c.now().Before(fails.until)
		perHost := map[string]int{}
		seen := map[string]hypervisor.Migration{}
		maps.Copy(seen, planned)
		maps.Copy(seen, c.inflight)
		for _, f := range seen {
			perHost[f.Source()]++
			perHost[f.Target()]++
		}
		full := len(c.inflight) >= c.cfg.MaxConcurrent || perHost[src] >= c.cfg.MaxPerHost || perHost[m.TargetHostID] >= c.cfg.MaxPerHost
		c.mu.Unlock()
		switch {
		case busy:
			ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Target: m.TargetHostID, Message: "already migrating"})
			continue
		case unsettled:
			ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Target: m.TargetHostID, Message: "its last migration is not settled"})
			continue
		case backoff:
			ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Source: src, Target: m.TargetHostID,
				Message: fmt.Sprintf("backing off after %d failed moves until %s", fails.n, fails.until.Format(time.TimeOnly))})
			continue
		case full:
			ev.add(store.Event{Kind: store.Skipped, VM: m.VMInstanceID, Source: src, Target: m.TargetHostID, Message: "concurrency limit reached; decided again next cycle"})
			continue
		}
		// The decision, and the skips before it, are written before the start.
		if !ev.gate(m.VMInstanceID, "the move") {
			continue
		}
		if c.begin(ctx, m, src) { // migration.go
			started = append(started, m.VMInstanceID)
		}
	}
	return started
}

// Wait blocks until every migration this controller started has ended.
func (c *Controller) Wait() { c.wg.Wait() }

// InFlight lists the VMs migrating now.
func (c *Controller) InFlight() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for vm := range c.inflight {
		out = append(out, vm)
	}
	sort.Strings(out)
	return out
}

// Pending lists the moves awaiting approval.
func (c *Controller) Pending() []model.MigrationRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []model.MigrationRequest
	for _, m := range c.pending {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMInstanceID < out[j].VMInstanceID })
	return out
}

// ApproveVM approves the pending move of vm; the next cycle starts it if the plan
// still wants it.
func (c *Controller) ApproveVM(vm string) error {
	if c.ha != nil { // ha.go: approvals live in etcd
		return c.haApprove(vm, "")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.pending[vm]
	if !ok {
		return fmt.Errorf("no move of %s is awaiting approval", vm)
	}
	if err := c.record(store.Event{Kind: store.Approved, State: store.StateApproved, VM: vm, Target: m.TargetHostID}); err != nil {
		return fmt.Errorf("approve %s: not approved: the event log cannot be written: %w", vm, err)
	}
	c.approved[vm] = true
	return nil
}

// Run reconciles, then runs a cycle every interval until ctx ends. Each cycle
// starts an interval after the previous one ended, not on a fixed tick: a slow
// cycle (a stats call held up by a migration job) followed by a catch-up tick would
// give the next stats a sliver of time, which turns timing errors into
// many-fold CPU readings and false overloads.
func (c *Controller) Run(ctx context.Context, onCycle func(Cycle, error)) error {
	if err := c.Reconcile(ctx); err != nil {
		return err
	}
	// persist.go: forecasts learned before a restart are loaded now and saved
	// periodically and when Run returns.
	defer c.persistForecasts(ctx)()
	t := time.NewTimer(c.cfg.Interval)
	defer t.Stop()
	for {
		cy, err := c.Step(ctx)
		if onCycle != nil {
			onCycle(cy, err)
		}
		t.Reset(c.cfg.Interval)
		select {
		case <-ctx.Done():
			c.Wait()
			return nil
		case <-t.C:
		}
	}
}

// Mode is the controller's mode.
func (c *Controller) Mode() Mode { return c.cfg.Mode }
