package controller

// What the API, the dashboard and the metrics read from the controller, and the
// operator's actions with the identity that took them. Nothing here decides.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

var (
	// eventLogErrors counts failed event-log writes in this process (record).
	eventLogErrors atomic.Uint64
	// modes holds a mode an operator asked for (by *Controller), readable without
	// c.mu: record stamps it on events from migration goroutines.
	modes sync.Map
)

// EventLogErrors is the number of events this process failed to write.
func EventLogErrors() uint64 { return eventLogErrors.Load() }

// currentMode is the mode asked for last, which the next cycle runs in.
func (c *Controller) currentMode() Mode {
	if m, ok := modes.Load(c); ok {
		return m.(Mode)
	}
	return c.cfg.Mode
}

// CurrentMode is the mode the controller runs in from its next cycle on.
func (c *Controller) CurrentMode() Mode { return c.currentMode() }

// HostIDs are the configured hosts, in configuration order.
func (c *Controller) HostIDs() []string {
	var out []string
	for _, h := range c.cfg.Hosts {
		out = append(out, h.ID)
	}
	return out
}

// Interval is the time between cycles.
func (c *Controller) Interval() time.Duration { return c.cfg.Interval }

// Confidence is the forecasts' stated coverage of their upper bound (0 for a
// policy that does not forecast).
func (c *Controller) Confidence() float64 {
	if fp, ok := c.pol.(core.Forecasting); ok {
		return fp.Confidence()
	}
	return 0
}

// Move is a migration in flight with its latest progress.
type Move struct {
	VM       string                     `json:"vm"`
	Source   string                     `json:"source"`
	Target   string                     `json:"target"`
	Phase    hypervisor.Phase           `json:"phase"`
	Fraction float64                    `json:"fraction"` // of the data sent, 0..1
	Seconds  float64                    `json:"seconds"`  // the hypervisor's job clock
	Options  model.StateTransferOptions `json:"options"`
}

// Moves lists the migrations in flight, by VM.
func (c *Controller) Moves() []Move {
	c.mu.Lock()
	migs := make([]hypervisor.Migration, 0, len(c.inflight))
	for _, m := range c.inflight {
		migs = append(migs, m)
	}
	c.mu.Unlock()
	out := make([]Move, 0, len(migs))
	for _, m := range migs {
		p := m.Progress()
		out = append(out, Move{VM: m.VM(), Source: m.Source(), Target: m.Target(), Phase: p.Phase,
			Fraction: p.Fraction(), Seconds: p.Elapsed.Seconds(), Options: m.Options()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// ApproveBy approves the pending move of vm in who's name; the next cycle starts
// it if the plan still wants it.
func (c *Controller) ApproveBy(vm, who string) error {
	if c.ha != nil { // ha.go: approvals live in etcd, taken on any replica
		return c.haApprove(vm, who)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.pending[vm]
	if !ok {
		return fmt.Errorf("%w: no move of %s is awaiting approval", ErrNotPending, vm)
	}
	// The approval is in the log before it can start anything.
	if err := c.record(store.Event{Kind: store.Approved, State: store.StateApproved, VM: vm, Target: m.TargetHostID, Message: "approved by " + who}); err != nil {
		return fmt.Errorf("approve %s: not approved: the event log cannot be written: %w", vm, err)
	}
	c.approved[vm] = true
	return nil
}

// ErrNotPending is returned for a VM with no move awaiting approval.
var ErrNotPending = fmt.Errorf("not pending")

// RejectBy drops the pending move of vm in who's name. A later cycle may
// propose it again if the host is still at risk.
func (c *Controller) RejectBy(vm, who string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.pending[vm]
	if !ok {
		return fmt.Errorf("%w: no move of %s is awaiting approval", ErrNotPending, vm)
	}
	delete(c.pending, vm)
	delete(c.approved, vm)
	c.record(store.Event{Kind: store.Skipped, VM: vm, Target: m.TargetHostID, Message: "rejected by " + who})
	return nil
}

// SetModeBy switches the mode in who's name from the next cycle on (ApplyMode).
func (c *Controller) SetModeBy(m Mode, who string) error {
	if m != DryRun && m != Approve && m != Auto {
		return fmt.Errorf("mode: %q is not dry-run, approve or auto", m)
	}
	old := c.currentMode()
	modes.Store(c, m)
	c.record(store.Event{Kind: ModeChange, Message: fmt.Sprintf("mode %s -> %s by %s", old, m, who)})
	return nil
}

// ModeChange is the event kind of a mode change.
const ModeChange = "mode-change"

// ApplyMode makes a mode asked for through SetModeBy the one cycles run in. Run's
// onCycle calls it (through the metrics observer), between cycles, so that no
// cycle sees the mode change half-way.
func (c *Controller) ApplyMode() {
	if m, ok := modes.Load(c); ok && c.cfg.Mode != m.(Mode) {
		c.mu.Lock()
		c.cfg.Mode = m.(Mode)
		c.mu.Unlock()
	}
}

// DrainBy evacuates host (see Drain) in who's name.
func (c *Controller) DrainBy(ctx context.Context, host, who string) (core.Plan, error) {
	if !slices.Contains(c.HostIDs(), host) {
		return core.Plan{}, fmt.Errorf("drain: host %q is not configured", host)
	}
	c.record(store.Event{Kind: store.Drain, Host: host, Message: "requested by " + who})
	return c.Drain(ctx, host)
}

// Explain runs the policy on a cycle's snapshot and forecasts again, keeping every
// host's risk and every candidate's verdict: what plan --explain prints. False
// for a policy that cannot explain itself or a cycle with no snapshot.
func (c *Controller) Explain(cy Cycle) (core.Explained, bool) {
	h, ok := c.pol.(*core.Headroom)
	if !ok || cy.Snapshot == nil {
		return core.Explained{}, false
	}
	var inflight []model.MigrationRequest
	for _, v := range cy.Snapshot.VMs {
		for _, t := range v.MigratingTo {
			inflight = append(inflight, model.MigrationRequest{VMInstanceID: v.ID, TargetHostID: cy.Snapshot.Hosts[t].ID})
		}
	}
	return h.Explain(core.Input{Snapshot: cy.Snapshot, Forecasts: cy.Forecasts, InFlight: inflight}), true
}
