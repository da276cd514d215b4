package controller

// High availability (internal/ha): with an ha section, the controller is one of
// several replicas. Every replica observes and forecasts each cycle (a hot
// standby); only the elected leader acts. The state a new leader needs lives in
// etcd: the moves in flight (written by the fenced driver in the same
// transaction that checks leadership), cooldowns, pending moves and approvals.
// On taking over, the leader adopts every move etcd records and it does not
// follow itself, and never calls migrate for one.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/headroom/headroom/internal/ha"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// haState is the controller's side of HA.
type haState struct {
	fence *ha.Fenced
	// term is the last term this node acted in, to log a takeover once.
	term uint64
	// cur is the term of the running act, whose writes it fences.
	cur ha.Term
	// loaded is the approval queue as read at the start of act, so that the save
	// writes only what act changed (an approval taken meanwhile on another
	// replica survives).
	loadedPending  map[string]model.MigrationRequest
	loadedApproved map[string]bool
}

// StartHA joins the election the config's ha section names, if it has one,
// and makes this controller a replica. Call it before Run; stop leaves the
// election (resigning, so another replica takes over at once).
func (c *Controller) StartHA() (stop func(), err error) {
	if !c.cfg.HA.Enabled() {
		return func() {}, nil
	}
	node, err := ha.Start(c.cfg.HA.Options())
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	c.UseHA(node)
	return func() { node.Close() }, nil
}

// UseHA makes the controller a replica of node's election: its driver is
// fenced, and act does nothing unless node leads. Call it before Run.
func (c *Controller) UseHA(node *ha.Node) {
	f := ha.Fence(c.drv, node)
	c.drv = f
	// Keep what a stats source offers beyond the driver (warmstart.go).
	if s, ok := f.Driver.(statsSource); ok {
		c.drv = fencedSource{Fenced: f, statsSource: s}
	}
	c.ha = &haState{fence: f}
}

// statsSource is a driver with history and holds (the Prometheus one).
type statsSource interface {
	Backfiller
	Holder
	holdCounter
}

type fencedSource struct {
	*ha.Fenced
	statsSource
}

// Leading reports whether this controller acts: always without HA, only as
// the elected leader with it.
func (c *Controller) Leading() bool {
	if c.ha == nil {
		return true
	}
	_, ok := c.ha.fence.Node().Leading()
	return ok
}

// haAct runs at the top of act. It reads the shared state (every replica, so
// any one's API lists pending moves) and reports whether this replica may act:
// only the leader, and only with the state read. The leader then adopts the
// moves etcd records that it does not follow itself.
func (c *Controller) haAct(ctx context.Context) bool {
	h := c.ha
	term, leading := h.fence.Node().Leading()
	rctx, cancel := context.WithTimeout(ctx, min(c.cfg.Interval, 10*time.Second))
	snap, err := h.fence.State().Read(rctx)
	cancel()
	if err != nil {
		if leading {
			c.record(store.Event{Kind: store.Failure, Error: err.Error(), Message: "ha: cannot read the shared state from etcd; not acting this cycle"})
		}
		return false
	}
	c.mu.Lock()
	c.pending = maps.Clone(snap.Pending)
	c.approved = maps.Clone(snap.Approved)
	for vm, t := range snap.Cooldowns {
		if t.After(c.lastMove[vm]) {
			c.lastMove[vm] = t
		}
	}
	c.mu.Unlock()
	if !leading {
		return false
	}
	if term.N != h.term {
		h.term = term.N
		c.record(store.Event{Kind: store.Reconciled, Message: fmt.Sprintf("ha: %s leads (election key %s); %d moves in flight in etcd",
			h.fence.Node().Name(), term.Key, len(snap.InFlight))})
	}
	for _, k := range snap.Bad {
		c.record(store.Event{Kind: store.Failure, Message: "ha: unreadable etcd key left alone: " + k})
	}
	h.cur = term
	h.loadedPending, h.loadedApproved = snap.Pending, snap.Approved
	c.haAdopt(snap.InFlight)
	return true
}

// haAdopt follows every recorded move this controller is not following: one a
// previous leader started. It watches the job (or where the VM runs) to the
// end and closes the record; the VM counts as in flight meanwhile, so no plan
// moves it again.
func (c *Controller) haAdopt(recs map[string]ha.Record) {
	for vm, rec := range recs {
		c.mu.Lock()
		_, busy := c.inflight[vm]
		c.mu.Unlock()
		if busy {
			continue
		}
		c.record(store.Event{Kind: store.Reconciled, State: "adopted", VM: vm, Source: rec.Source, Target: rec.Target,
			Message: fmt.Sprintf("ha: adopted from %s, started %s; following it to its end", rec.Leader, rec.Started.Format(time.RFC3339))})
		ctx, cancel := context.WithTimeout(context.Background(), max(c.cfg.MigrationTimeout-time.Since(rec.Started), 2*c.cfg.Interval))
		m := c.ha.fence.AdoptRecord(ctx, rec)
		c.mu.Lock()
		c.inflight[vm] = m
		c.mu.Unlock()
		c.wg.Add(1)
		go c.haFollow(ctx, cancel, m, rec)
	}
}

// haFollow records an adopted move's end; past the migration timeout it
// aborts the job, as for a move this controller started.
func (c *Controller) haFollow(ctx context.Context, cancel context.CancelFunc, m hypervisor.Migration, rec ha.Record) {
	defer c.wg.Done()
	defer cancel()
	res, err := m.Wait(context.Background())
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
		if aerr := m.Abort(actx); aerr != nil && !errors.Is(aerr, hypervisor.ErrNoMigration) {
			c.record(store.Event{Kind: store.Failure, VM: rec.VM, Error: aerr.Error(), Message: "ha: abort of an adopted move after the timeout failed"})
		}
		acancel()
	}
	e := store.Event{Kind: store.MigrationEnd, VM: rec.VM, Source: rec.Source, Target: rec.Target, State: string(hypervisor.PhaseCompleted),
		Seconds: time.Since(rec.Started).Seconds(), Message: "ha: adopted move from " + rec.Leader}
	if o := rec.Options; o.PredictedSeconds > 0 {
		e.Options = &o
	}
	if err != nil {
		e.State, e.Error = string(hypervisor.PhaseFailed), err.Error()
		if errors.Is(err, ha.ErrEndedUnmoved) && res.Where.Host == rec.Source {
			e.Message += "; the VM is on its source"
		}
	}
	c.record(e)
	c.mu.Lock()
	delete(c.inflight, rec.VM)
	if err == nil {
		c.lastMove[rec.VM] = c.now()
	}
	c.mu.Unlock()
}

// haSave writes what act changed in the approval queue, fenced on the term act
// ran in; a deposed leader's write fails and is dropped.
func (c *Controller) haSave(ctx context.Context) {
	h := c.ha
	c.mu.Lock()
	put := map[string]model.MigrationRequest{}
	for vm, m := range c.pending {
		if old, ok := h.loadedPending[vm]; !ok || old.TargetHostID != m.TargetHostID {
			put[vm] = m
		}
	}
	var drop, consumed []string
	for vm := range h.loadedPending {
		if _, ok := c.pending[vm]; !ok {
			drop = append(drop, vm)
		}
	}
	for vm := range h.loadedApproved {
		if !c.approved[vm] {
			consumed = append(consumed, vm)
		}
	}
	c.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.fence.State().SavePending(sctx, h.cur, put, drop, consumed); err != nil {
		c.record(store.Event{Kind: store.Failure, Error: err.Error(), Message: "ha: approval queue not saved to etcd"})
	}
}

// haApprove takes an approval on any replica: etcd holds it until the leader
// starts the move.
// etcd is where the approval is durable (every replica reads it there); the
// local log records it after.
func (c *Controller) haApprove(vm, who string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c.ha.fence.State().Approve(ctx, vm)
	if err != nil {
		if errors.Is(err, ha.ErrNotPending) {
			return fmt.Errorf("%w: no move of %s is awaiting approval", ErrNotPending, vm)
		}
		return fmt.Errorf("approve %s: %w", vm, err)
	}
	c.mu.Lock()
	c.approved[vm] = true
	c.mu.Unlock()
	e := store.Event{Kind: store.Approved, State: store.StateApproved, VM: vm, Target: m.TargetHostID}
	if who != "" {
		e.Message = "approved by " + who
	}
	c.record(e)
	return nil
}

// ErrNotLeader is returned for an action only the leader takes (a drain) asked
// of a follower; the API answers it 409 Conflict.
var ErrNotLeader = ha.ErrNotLeader

// notLeading is nil when this controller acts (no HA, or the leader), else an
// ErrNotLeader that names the leader if etcd says who it is.
func (c *Controller) notLeading(ctx context.Context) error {
	if c.Leading() {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	name, err := c.ha.fence.Node().Leader(lctx)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s is a follower and the leader is not known (%v); ask the leader", ErrNotLeader, c.ha.fence.Node().Name(), err)
	case name == "":
		return fmt.Errorf("%w: %s is a follower and no replica leads now; try again", ErrNotLeader, c.ha.fence.Node().Name())
	}
	return fmt.Errorf("%w: %s is a follower; ask the leader, %s", ErrNotLeader, c.ha.fence.Node().Name(), name)
}
