package controller

// The migration state machine. Every move goes
//
//	planned -> [approved] -> started -> completed | failed | aborted | needs-attention
//
// and each state is in the event log before the step it names is taken: the
// decision (planned) before the move is queued, the approval (approve mode)
// before it may start, the start before the hypervisor is asked. A controller
// killed at any point therefore restarts knowing every move that may be running,
// and adopts it (Reconcile) instead of starting it again. A move whose outcome is
// not known (needs-attention: the job ended but a host that would say where the
// VM runs is silent) keeps its record open and its VM in place until the hosts
// tell, in this run or the next.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
	"github.com/headroom/headroom/internal/transfer"
)

// begin records the start of move m of a VM on src and asks the hypervisor for
// it, within the collection deadline. A refusal ends the record failed.
func (c *Controller) begin(ctx context.Context, m model.MigrationRequest, src string) bool {
	vm, target := m.VMInstanceID, m.TargetHostID
	opts := m.StateTransferOptions
	c.record(store.Event{Kind: store.MigrationStart, State: store.StateStarted, VM: vm, Source: src, Target: target, Options: &opts})
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CollectTimeout)
	mig, err := c.drv.Migrate(sctx, vm, target, opts)
	cancel()
	if err != nil {
		c.record(store.Event{Kind: store.MigrationEnd, State: store.StateFailed, VM: vm, Source: src, Target: target,
			Error: err.Error(), Message: "migration refused"})
		c.afterMove(vm, blamed(err, target), store.StateFailed, err.Error(), err)
		return false
	}
	c.mu.Lock()
	c.inflight[vm] = mig
	c.mu.Unlock()
	c.wg.Add(1)
	go c.follow(mig, time.Now().Add(c.cfg.MigrationTimeout), nil)
	return true
}

// blamed is the host a failed call is about: the one its HostError names, else
// the target.
func blamed(err error, target string) string {
	var he *hypervisor.HostError
	if errors.As(err, &he) && he.Host != "" {
		return he.Host
	}
	return target
}

// follow watches a migration to its end and records the outcome. Past its
// deadline, or when no data has moved for StallTimeout, it aborts the job
// through the hypervisor, and records the end once the job has ended. opts, if
// given, are the move's options as the log has them (an adopted job's).
func (c *Controller) follow(mig hypervisor.Migration, deadline time.Time, opts *model.StateTransferOptions) {
	defer c.wg.Done()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	stall := time.NewTicker(max(min(c.cfg.StallTimeout/4, 5*time.Second), 10*time.Millisecond))
	defer stall.Stop()
	updates := mig.Updates()
	var (
		moved    uint64
		lastMove = time.Now()
		why      string // the abort's reason
		grace    <-chan time.Time
		postcopy bool
	)
	abort := func(reason string) {
		why = reason
		grace = time.After(max(c.cfg.StallTimeout, 30*time.Second))
		actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := mig.Abort(actx); err != nil && !errors.Is(err, hypervisor.ErrNoMigration) {
			c.record(store.Event{Kind: store.Failure, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(), Error: err.Error(),
				Message: "abort (" + reason + ") failed; following the job to its end"})
		}
	}
	for done := false; !done; {
		select {
		case <-mig.Done():
			done = true
		case p, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			postcopy = postcopy || p.Phase == hypervisor.PhasePostCopy
			if p.DataProcessed > moved {
				moved, lastMove = p.DataProcessed, time.Now()
			}
		case <-timeout.C:
			if why == "" {
				abort(fmt.Sprintf("migration_timeout %v passed", c.cfg.MigrationTimeout))
			}
		case <-stall.C:
			if why == "" && time.Since(lastMove) >= c.cfg.StallTimeout {
				abort(fmt.Sprintf("stalled: no data moved for %v (stall_timeout)", time.Since(lastMove).Round(time.Second)))
			}
		case <-grace:
			grace = nil
			c.record(store.Event{Kind: store.Failure, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(),
				Message: fmt.Sprintf("the job has not ended since the abort (%s); the VM is not moved until it does", why)})
		}
	}
	res, err := mig.Wait(context.Background())
	c.finish(mig, res, err, why, postcopy, opts)
}

// outcome is the final state of a migration that ended with res and err.
func outcome(mig hypervisor.Migration, res hypervisor.Result, err error) string {
	switch {
	case err == nil:
		return store.StateCompleted
	case errors.Is(err, hypervisor.ErrNotVerified), errors.Is(err, hypervisor.ErrSplitBrain), errors.Is(err, hypervisor.ErrLocationUnknown):
		return store.StateNeedsAttention
	case res.Where.VM != "" && res.Where.Host != mig.Source():
		// It did not complete, and the VM is not (only) back on its source.
		return store.StateNeedsAttention
	case res.Phase == hypervisor.PhaseCancelled, errors.Is(err, hypervisor.ErrAborted):
		return store.StateAborted
	}
	return store.StateFailed
}

// finish records a migration's end and what it teaches: the link's rate, the
// VM's backoff, the target's health.
func (c *Controller) finish(mig hypervisor.Migration, res hypervisor.Result, err error, why string, postcopy bool, opts *model.StateTransferOptions) {
	state := outcome(mig, res, err)
	secs := res.Elapsed.Seconds() // the hypervisor's job clock
	if secs == 0 {
		secs = res.Wall.Seconds()
	}
	e := store.Event{Kind: store.MigrationEnd, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(),
		State: state, Seconds: secs, DataMiB: float64(res.DataProcessed) / (1 << 20)}
	if state == store.StateCompleted || postcopy {
		// A move that never switched over cost the VM no downtime, whatever
		// the hypervisor's figures for the failed job say.
		e.DowntimeMs = float64(res.Downtime) / float64(time.Millisecond)
	}
	if o := mig.Options(); o.PredictedSeconds > 0 || o.PredictedDowntime > 0 {
		e.Options = &o
	} else if opts != nil {
		e.Options = opts
	}
	var notes []string
	if why != "" {
		notes = append(notes, "aborted: "+why)
	}
	switch {
	case err == nil && len(res.Where.Unreachable) > 0:
		notes = append(notes, "verified on the source and target; not asked: "+strings.Join(res.Where.Unreachable, ", "))
	case state == store.StateNeedsAttention:
		notes = append(notes, fmt.Sprintf("where the VM runs is not settled (on %q, states %v, not asked %v); it is not moved until the hosts tell",
			res.Where.Host, res.Where.States, res.Where.Unreachable))
	}
	e.Message = strings.Join(notes, "; ")
	if err != nil {
		e.Error = err.Error()
	}
	if err == nil {
		c.links.Learn(transfer.Pair{Source: mig.Source(), Target: mig.Target()}, mig.Options(), transfer.MeasuredFrom(res))
	}
	c.record(e)
	c.mu.Lock()
	delete(c.inflight, mig.VM())
	if state == store.StateNeedsAttention {
		c.unsettled[mig.VM()] = store.Event{Kind: store.MigrationStart, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(), Options: e.Options}
	}
	c.mu.Unlock()
	msg := e.Error
	if why != "" {
		msg = why
	}
	c.afterMove(mig.VM(), mig.Target(), state, msg, err)
}

// afterMove updates the VM's backoff and the blamed host's health after a move
// ended in state, and logs a host set aside.
func (c *Controller) afterMove(vm, host, state, why string, err error) {
	completed := state == store.StateCompleted
	c.mu.Lock()
	if completed {
		c.lastMove[vm] = c.now()
	}
	if state != store.StateNeedsAttention {
		c.vmAfterMove(vm, completed, why)
	}
	ev := c.hostAfterMove(host, completed, err)
	c.mu.Unlock()
	if ev != nil {
		c.record(*ev)
	}
}

// Reconcile settles the migrations the event log leaves open, as a controller
// does on start: a job libvirt still runs is adopted and followed to its end;
// otherwise where the VM runs closes the record. A VM whose hosts cannot tell
// yet is not moved, and asked about again every cycle.
func (c *Controller) Reconcile(ctx context.Context) error {
	open, err := c.log.InFlight()
	if err != nil {
		return err
	}
	for _, e := range open {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.CollectTimeout)
		ok, why := c.settle(sctx, e)
		cancel()
		if !ok {
			c.mu.Lock()
			c.unsettled[e.VM] = e
			c.mu.Unlock()
			c.record(store.Event{Kind: store.Failure, VM: e.VM, Source: e.Source, Target: e.Target, Error: why,
				Message: "cannot tell yet whether this migration of a previous run still runs; the VM is not moved until its hosts answer"})
		}
	}
	return nil
}

// settleUnsettled tries again to settle the migrations whose outcome is not
// known, within the collection deadline.
func (c *Controller) settleUnsettled(ctx context.Context) {
	c.mu.Lock()
	var open []store.Event
	for _, e := range c.unsettled {
		open = append(open, e)
	}
	c.mu.Unlock()
	for _, e := range open {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.CollectTimeout)
		c.settle(sctx, e)
		cancel()
	}
}

// settle adopts or closes one open migration record e: if the hypervisor still
// runs the job it is followed to its end (and its end recorded then), else the
// record is closed by where the VM runs. It reports false, with why, when the
// hosts cannot tell yet.
func (c *Controller) settle(ctx context.Context, e store.Event) (bool, string) {
	mig, err := c.drv.Adopt(ctx, e.VM, e.Target)
	if err == nil {
		c.record(store.Event{Kind: store.Reconciled, State: store.StateAdopted, VM: e.VM, Source: e.Source, Target: e.Target,
			Message: "the hypervisor still runs the job; following it to its end"})
		c.mu.Lock()
		c.inflight[e.VM] = mig
		delete(c.unsettled, e.VM)
		c.mu.Unlock()
		c.wg.Add(1)
		deadline := time.Now().Add(c.cfg.MigrationTimeout - c.now().Sub(e.Time))
		if e.Time.IsZero() {
			deadline = time.Now().Add(c.cfg.MigrationTimeout)
		}
		go c.follow(mig, deadline, e.Options)
		return true, ""
	}
	if !errors.Is(err, hypervisor.ErrNoMigration) && !errors.Is(err, hypervisor.ErrVMNotFound) {
		return false, err.Error()
	}
	loc, err := c.drv.Locate(ctx, e.VM)
	ev := store.Event{Kind: store.Reconciled, VM: e.VM, Source: e.Source, Target: e.Target}
	switch {
	case errors.Is(err, hypervisor.ErrVMNotFound):
		ev.State, ev.Message = "vanished", "runs on no host"
	case err != nil:
		return false, err.Error()
	case loc.Host == e.Target:
		ev.State, ev.Message = store.StateCompleted, "no job runs; found running on the target"
	case loc.Host == e.Source:
		ev.State, ev.Message = store.StateFailed, "no job runs; still on the source"
	case loc.Host == "":
		ev.State, ev.Message = "vanished", "runs on no host"
	default:
		ev.State, ev.Message = "elsewhere", "no job runs; found on "+loc.Host
	}
	c.record(ev)
	c.mu.Lock()
	delete(c.unsettled, e.VM)
	if ev.State == store.StateCompleted {
		c.lastMove[e.VM] = c.now()
	}
	c.mu.Unlock()
	return true, ""
}
