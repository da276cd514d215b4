package controller

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/rules"
	"github.com/headroom/headroom/internal/store"
)

// Drain plans the evacuation of host and carries it out by mode. The moves obey the
// same rules as any other; VMs with nowhere to go are logged and stay.
func (c *Controller) Drain(ctx context.Context, host string) (core.Plan, error) {
	r, err := c.drainRound(ctx, host)
	return r.plan, err
}

// drained is one drain round: its plan, the snapshot it was made on, and the
// moves started.
type drained struct {
	plan    core.Plan
	snap    *model.Snapshot
	started []string
}

func (c *Controller) drainRound(ctx context.Context, host string) (drained, error) {
	h, ok := c.pol.(*core.Headroom)
	if !ok {
		return drained{}, fmt.Errorf("drain needs the headroom policy, not %s", c.pol.Name())
	}
	if err := c.notLeading(ctx); err != nil {
		return drained{}, fmt.Errorf("drain %s: %w", host, err)
	}
	inflight := c.inflightNow()
	snap, err := c.measured(ctx)
	if err != nil {
		return drained{}, err
	}
	c.decorate(snap, inflight)
	c.estimateMoves(snap)
	snap.Rules = append(slices.Clip(c.cfg.Rules), c.guards(snap)...)
	hi := slices.IndexFunc(snap.Hosts, func(x model.Host) bool { return x.ID == host })
	if hi < 0 {
		return drained{}, fmt.Errorf("drain: host %q is not configured or not reachable", host)
	}
	c.record(store.Event{Kind: store.Drain, Host: host, Message: fmt.Sprintf("draining %d VMs", len(snap.Hosts[hi].VMs))})
	ex := h.Evacuate(core.Input{Snapshot: snap, InFlight: requests(inflight)}, hi)
	started := c.act(ctx, snap, ex.Plan, inflight)
	return drained{plan: ex.Plan, snap: snap, started: started}, nil
}

// measured reads the cluster into a snapshot whose demand is measured: a VM
// with no rate in its sample and none from before (a one-shot process's first
// sample has none) is read again after a while, and one still unmeasured counts
// at its full size rather than idle, so that a drain never places on demand it
// does not know.
func (c *Controller) measured(ctx context.Context) (*model.Snapshot, error) {
	var snap model.Snapshot
	for try := 0; ; try++ {
		r, err := c.read(ctx)
		if err != nil {
			return nil, err
		}
		snap = hypervisor.Snapshot(c.now().Sub(c.start).Seconds(), r.up, r.vms, r.stats)
		snap.Interval = c.cfg.Interval.Seconds()
		c.carryDemand(&snap)
		unknown := c.unmeasured(&snap)
		if len(unknown) == 0 {
			break
		}
		if try == 1 {
			for _, i := range unknown {
				v := &snap.VMs[i]
				if h := &snap.Hosts[v.Host]; h.Capacity.CPU > 0 {
					h.Util += (v.Size.CPU - v.Demand.CPU) / h.Capacity.CPU
				}
				v.Demand.CPU = v.Size.CPU
			}
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(c.cfg.Interval, 5*time.Second)):
		}
	}
	return &snap, nil
}

// unmeasured lists the snapshot's VMs, on a host, whose CPU demand is not
// known: no rate in this sample and none remembered.
func (c *Controller) unmeasured(snap *model.Snapshot) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, v := range snap.VMs {
		if _, known := c.lastRates[v.ID]; v.Host >= 0 && len(v.History) == 0 && !known {
			out = append(out, i)
		}
	}
	return out
}

// drainAttempts is how many failed moves of one VM a drain makes before it
// gives up on that VM.
const drainAttempts = 3

// DrainHost empties host round by round, writing each round's moves and the VMs
// that stay (named, with why) to w. Only auto mode moves anything, so only it
// goes on after the first round, and it stops when the host is empty or a round
// could start nothing: a VM whose move failed is retried after its backoff, at
// most drainAttempts times. The error names every VM left on the host (or, in
// the other modes, every VM the plan could not place).
func (c *Controller) DrainHost(ctx context.Context, host string, w io.Writer) error {
	if err := c.Reconcile(ctx); err != nil {
		return err
	}
	why := map[string]string{} // VM: why it stays, by the latest round
	var left []string
	for round := 1; ; round++ {
		r, err := c.drainRound(ctx, host)
		if err != nil {
			return err
		}
		for _, m := range r.plan.Moves {
			fmt.Fprintf(w, "round %d: %s -> %s\n", round, m.VMInstanceID, m.TargetHostID)
			delete(why, m.VMInstanceID)
		}
		for _, u := range r.plan.Unplaced {
			id := r.snap.VMs[u.VM].ID
			fmt.Fprintf(w, "round %d: %s stays: %s\n", round, id, u.Reason)
			why[id] = u.Reason
		}
		c.Wait()
		hi := slices.IndexFunc(r.snap.Hosts, func(x model.Host) bool { return x.ID == host })
		left = left[:0]
		for _, v := range r.snap.Hosts[hi].VMs {
			if vm := r.snap.VMs[v]; vm.Host == hi {
				left = append(left, vm.ID)
			}
		}
		if c.currentMode() != Auto {
			if len(r.plan.Unplaced) == 0 {
				return nil
			}
			left = left[:0]
			for id := range why {
				left = append(left, id)
			}
			break
		}
		if len(left) == 0 {
			return nil
		}
		if len(r.started) > 0 {
			continue
		}
		// Nothing started: wait out the backoff of a VM that may try again.
		next, ok := c.retryAt(left)
		if !ok {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
	// What a final listing says is still there, with why.
	if r, err := c.read(ctx); err == nil && c.currentMode() == Auto {
		left = left[:0]
		for _, v := range r.vms {
			if v.Host == host && v.State.Active() {
				left = append(left, v.ID)
			}
		}
		if len(left) == 0 {
			return nil
		}
	}
	sort.Strings(left)
	left = slices.Compact(left)
	var parts []string
	c.mu.Lock()
	for _, id := range left {
		reason := why[id]
		if f := c.failures[id]; f != nil {
			reason = fmt.Sprintf("%d failed moves, the last: %s", f.n, f.last)
		}
		if reason == "" {
			reason = "not moved"
		}
		parts = append(parts, id+" ("+reason+")")
	}
	c.mu.Unlock()
	verb := "still on it"
	if c.currentMode() != Auto {
		verb = "would stay"
	}
	return fmt.Errorf("drain %s: %d VMs %s: %s", host, len(left), verb, strings.Join(parts, "; "))
}

// retryAt is when the first of vms that failed fewer than drainAttempts times
// may be tried again.
func (c *Controller) retryAt(vms []string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, vm := range vms {
		f := c.failures[vm]
		if f == nil || f.n >= drainAttempts {
			continue
		}
		if next.IsZero() || f.until.Before(next) {
			next = f.until
		}
	}
	if next.IsZero() {
		return next, false
	}
	// The backoff runs on the controller's clock; waits are on the wall's.
	return time.Now().Add(next.Sub(c.now())), true
}

// checkRules says once, at the first cycle that heard from every host, which
// rules name VMs that no host runs: they bind when the VMs appear, and a
// misspelt name never will.
func (c *Controller) checkRules(r reading) {
	if c.rulesChecked || len(r.down) > 0 || len(c.cfg.Rules) == 0 {
		return
	}
	c.rulesChecked = true
	var ids []string
	for _, v := range r.vms {
		ids = append(ids, v.ID)
	}
	for _, msg := range rules.Absent(c.cfg.Rules, ids) {
		c.record(store.Event{Kind: store.Warning, Message: msg})
		fmt.Fprintln(os.Stderr, "headroom: warning:", msg)
	}
}
