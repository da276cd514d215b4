package controller

// The migration state machine. Every move goes
//
//	planned -> [approved] -> started -> verifying -> completed | failed | aborted | needs-attention
//
// and each state is in the event log before the step it names is taken: the
// decision (planned) before the move is queued, the approval (approve mode)
// before it may start, the start before the hypervisor is asked, verifying
// once the job has ended and before where the VM runs decides the outcome. A
// planned, approved or started record that cannot be written stops its step
// (gate): a full disk delays moves, it never makes one the log does not know.
// A controller killed at any point therefore restarts knowing every move that
// may be running, and adopts it (Reconcile) instead of starting it again: a
// start with no later state is adopted if the hypervisor still runs the job; a
// verifying one (the job is over) is closed by where the VM runs. A move
// whose outcome is not known (needs-attention: the job ended but a host that
// would say where the VM runs is silent), or whose end could not be written,
// keeps its record open and its VM in place until it is settled, in this run
// or the next. A fencing refusal (HA: not the leader, a move already recorded
// in etcd) ends the record aborted and blames neither host nor VM.
//
// The README has the transitions as a table.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/ha"
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
	start := store.Event{Kind: store.MigrationStart, State: store.StateStarted, VM: vm, Source: src, Target: target, Options: &opts}
	if !c.gate(start, "the migration") {
		return false
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CollectTimeout)
	mig, err := c.drv.Migrate(sctx, vm, target, opts)
	cancel()
	if err != nil && ha.Refused(err) {
		// Fencing said no before the hypervisor was asked: not a failure of
		// the host or the VM, so neither backs off.
		fmt.Printf("headroom: migration of %s not started: %v\n", vm, err)
		c.closeRecord(store.Event{Kind: store.MigrationEnd, State: store.StateAborted, VM: vm, Source: src, Target: target,
			Error: err.Error(), Message: "not started: refused by the HA fence (not a host or VM failure)"}, start)
		return false
	}
	if err != nil {
		c.closeRecord(store.Event{Kind: store.MigrationEnd, State: store.StateFailed, VM: vm, Source: src, Target: target,
			Error: err.Error(), Message: "migration refused"}, start)
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
	// The job is over; its outcome rests on where the VM runs now. Recorded
	// first, so that a restart from here asks that and adopts no job.
	c.record(store.Event{Kind: MigrationVerify, State: store.StateVerifying, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(),
		Message: "the job has ended; checking where the VM runs"})
	res, err := mig.Wait(context.Background())
	c.finish(mig, res, err, why, postcopy, opts)
}

// MigrationVerify is the event kind of the verifying state: a migration's job
// has ended and where its VM runs is being checked. It leaves the record open
// (store.Log.InFlight ignores it); Reconcile reads it to skip adopting a job.
const MigrationVerify = "migration-verify"

// closeRecord writes e, a record's final state. If the write fails, the move
// is kept unsettled (open is its start, as the log has it): the VM is not
// moved again, and each cycle closes the record anew by where the VM runs,
// until the log takes it.
func (c *Controller) closeRecord(e, open store.Event) {
	if c.record(e) == nil {
		return
	}
	open.State = store.StateVerifying // no job runs any more
	c.mu.Lock()
	c.unsettled[e.VM] = open
	c.mu.Unlock()
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
	open := store.Event{Kind: store.MigrationStart, State: store.StateVerifying, VM: mig.VM(), Source: mig.Source(), Target: mig.Target(), Options: e.Options}
	written := c.record(e) == nil
	c.mu.Lock()
	delete(c.inflight, mig.VM())
	if state == store.StateNeedsAttention || !written {
		c.unsettled[mig.VM()] = open
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
// otherwise, and always for a record last left verifying (its job is over),
// where the VM runs closes the record. A VM whose hosts cannot tell
// yet is not moved, and asked about again every cycle.
func (c *Controller) Reconcile(ctx context.Context) error {
	open, err := c.log.InFlight()
	if err != nil {
		return err
	}
	for _, e := range open {
		// The record's last state: verifying if a verify event follows its start.
		later, err := c.log.List(store.Filter{VM: e.VM, Kind: MigrationVerify})
		if err != nil {
			return err
		}
		for _, v := range later {
			if v.Seq > e.Seq {
				e.State = store.StateVerifying
			}
		}
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
	// A verifying record's job is over: where the VM runs settles it. Adopting
	// could only find a job started since, which is not this record's.
	mig, err := hypervisor.Migration(nil), error(hypervisor.ErrNoMigration)
	if e.State != store.StateVerifying {
		mig, err = c.drv.Adopt(ctx, e.VM, e.Target)
	}
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
	if c.record(ev) != nil {
		// Not closed in the log: keep the VM in place and try next cycle.
		c.mu.Lock()
		e.State = store.StateVerifying
		c.unsettled[e.VM] = e
		c.mu.Unlock()
		return true, ""
	}
	c.mu.Lock()
	delete(c.unsettled, e.VM)
	if ev.State == store.StateCompleted {
		c.lastMove[e.VM] = c.now()
	}
	c.mu.Unlock()
	return true, ""
}
