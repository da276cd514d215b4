package ha

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// ErrFenced marks a Migrate the fence did not let through: not leading, a
// move of the VM already recorded (ErrInFlight), or etcd not answering the
// fencing write. The driver was not called, so it says nothing about a host or
// a VM and must not count against them.
var ErrFenced = errors.New("ha: not started by the fence")

// Refused reports whether err is a fencing refusal rather than a hypervisor's
// failure.
func Refused(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrInFlight)
}

// Fenced is a hypervisor.Driver whose Migrate starts a move only for the leader:
// it first records the move in etcd in a transaction that holds only while this
// node's election key exists, then calls the driver. Every other method is the
// driver's own.
type Fenced struct {
	hypervisor.Driver
	node  *Node
	state *State
	// Poll is how often an adopted migration's VM is located; default 1 s.
	Poll time.Duration

	mu     sync.Mutex
	hostOf map[string]string // VM: its host at the last listing, a record's source
}

// Fence wraps drv for node.
func Fence(drv hypervisor.Driver, node *Node) *Fenced {
	return &Fenced{Driver: drv, node: node, state: NewState(node.Client(), node.Prefix()), Poll: time.Second, hostOf: map[string]string{}}
}

// State is the shared state the fence writes.
func (f *Fenced) State() *State { return f.state }

// Node is the election member the fence asks.
func (f *Fenced) Node() *Node { return f.node }

// VMs lists the VMs and keeps where each runs, for the records.
func (f *Fenced) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vms, err := f.Driver.VMs(ctx)
	f.mu.Lock()
	for _, v := range vms {
		if v.State == hypervisor.StateRunning || f.hostOf[v.ID] == "" {
			f.hostOf[v.ID] = v.Host
		}
	}
	f.mu.Unlock()
	return vms, err
}

// Migrate records the move in etcd, fenced on the leader key, then starts it.
// Not leading (by the local lease clock, or by etcd's compare) it returns
// ErrNotLeader and the driver is not called.
func (f *Fenced) Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (hypervisor.Migration, error) {
	t, ok := f.node.Leading()
	if !ok {
		return nil, fmt.Errorf("%w: %w", ErrFenced, ErrNotLeader)
	}
	f.mu.Lock()
	src := f.hostOf[vm]
	f.mu.Unlock()
	rec := Record{VM: vm, Source: src, Target: target, Options: opts, Leader: f.node.Name(), LeaderRev: t.Rev, Started: time.Now().UTC()}
	// The write must land while the lease surely lives; a later answer is moot.
	tctx, cancel := context.WithTimeout(ctx, f.node.Remaining())
	rev, err := f.state.Begin(tctx, t, rec)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("fenced migrate of %s: %w: %w", vm, ErrFenced, err)
	}
	if _, ok := f.node.Leading(); !ok {
		// The lease ran short while etcd answered: do not start. The record is
		// closed here if etcd can be reached, else by the next leader.
		f.end(vm, rev, false)
		return nil, fmt.Errorf("fenced migrate of %s: %w: %w (lease ran out during the write)", vm, ErrFenced, ErrNotLeader)
	}
	m, err := f.Driver.Migrate(ctx, vm, target, opts)
	if err != nil {
		f.end(vm, rev, false)
		return nil, err
	}
	return f.track(m, rev), nil
}

func (f *Fenced) end(vm string, rev int64, moved bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.state.End(ctx, vm, rev, moved, time.Now().UTC())
}

// track closes the record when the migration ends, before its Done, so a
// caller that sees it done never finds its record still open.
func (f *Fenced) track(m hypervisor.Migration, rev int64) hypervisor.Migration {
	w := &closing{Migration: m, done: make(chan struct{})}
	go func() {
		<-m.Done()
		res, err := m.Wait(context.Background())
		f.end(m.VM(), rev, err == nil && res.Phase == hypervisor.PhaseCompleted)
		close(w.done)
	}()
	return w
}

type closing struct {
	hypervisor.Migration
	done chan struct{}
}

func (c *closing) Done() <-chan struct{} { return c.done }

func (c *closing) Wait(ctx context.Context) (hypervisor.Result, error) {
	select {
	case <-c.done:
		return c.Migration.Wait(ctx)
	case <-ctx.Done():
		return hypervisor.Result{Progress: c.Progress()}, ctx.Err()
	}
}

// jobAdopter is a driver that can follow a hypervisor job it did not start.
type jobAdopter interface {
	Adopt(ctx context.Context, vm, target string) (hypervisor.Migration, error)
}

// AdoptRecord takes over a migration another leader recorded, and never calls
// Migrate. If the driver can follow the hypervisor's job (Adopt), it watches
// the job to its end. Otherwise, or while no job shows, it asks the hosts where
// the VM runs every Poll: while the target holds a copy and another host still
// runs the VM the move is in flight; the VM on the target alone is a finished
// move. An end without the move (the VM elsewhere, nothing on the target) must
// be seen twice, a Poll apart: the old leader may have called migrate just
// before its lease ran out, and the job may not show yet. The record is closed
// before the returned migration is done. ctx bounds the watch.
func (f *Fenced) AdoptRecord(ctx context.Context, rec Record) hypervisor.Migration {
	tr := hypervisor.NewTracker(rec.VM, rec.Source, rec.Target, rec.Options,
		func(ctx context.Context) error { return f.Driver.Abort(ctx, rec.VM) })
	go func() {
		res, err := f.follow(ctx, rec, tr)
		moved := err == nil
		if cerr := f.end(rec.VM, rec.Rev, moved); cerr != nil && err == nil {
			res.Err = "record not closed: " + cerr.Error()
		}
		tr.Finish(res, err)
	}()
	return tr
}

// ErrEndedUnmoved: an adopted migration ended with the VM not on its target
// (failed, aborted, or never started by the old leader).
var ErrEndedUnmoved = errors.New("ha: adopted migration ended without the move")

func (f *Fenced) follow(ctx context.Context, rec Record, tr *hypervisor.Tracker) (hypervisor.Result, error) {
	poll := f.Poll
	if poll <= 0 {
		poll = time.Second
	}
	unmoved := 0
	var loc hypervisor.Location
	var lerr error
	ad, canAdopt := f.Driver.(jobAdopter)
	for {
		if canAdopt {
			if m, err := ad.Adopt(ctx, rec.VM, rec.Target); err == nil {
				res, err := m.Wait(ctx)
				if err == nil && res.Phase != hypervisor.PhaseCompleted {
					err = fmt.Errorf("%w: %s ended %s", ErrEndedUnmoved, rec.VM, res.Phase)
				}
				return res, err
			}
		}
		loc, lerr = f.Driver.Locate(ctx, rec.VM)
		if lerr == nil {
			onTarget := loc.States[rec.Target].Active()
			elsewhere := false
			for h, st := range loc.States {
				if h != rec.Target && st.Active() {
					elsewhere = true
				}
			}
			switch {
			case onTarget && !elsewhere:
				p := tr.Progress()
				p.Phase = hypervisor.PhaseCompleted
				return hypervisor.Result{Progress: p, Verified: len(loc.Unreachable) == 0, Where: loc}, nil
			case onTarget:
				unmoved = 0
				tr.Update(hypervisor.Progress{Phase: hypervisor.PhaseRunning, Time: time.Now()})
			default:
				if unmoved++; unmoved >= 2 {
					p := tr.Progress()
					p.Phase = hypervisor.PhaseFailed
					p.Err = fmt.Sprintf("runs on %q, not the target", loc.Host)
					return hypervisor.Result{Progress: p, Where: loc}, fmt.Errorf("%w: %s runs on %q", ErrEndedUnmoved, rec.VM, loc.Host)
				}
			}
		}
		select {
		case <-ctx.Done():
			p := tr.Progress()
			if lerr != nil {
				p.Err = lerr.Error()
			}
			return hypervisor.Result{Progress: p, Where: loc}, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Adopt follows the hypervisor's job of vm (the driver's Adopt) for the
// leader only: a follower must neither abort nor settle a move, so it gets
// ErrNotLeader, which a caller takes as "cannot tell yet". The job's etcd
// record, if any, is closed when it ends.
func (f *Fenced) Adopt(ctx context.Context, vm, target string) (hypervisor.Migration, error) {
	if _, ok := f.node.Leading(); !ok {
		return nil, ErrNotLeader
	}
	ad, ok := f.Driver.(jobAdopter)
	if !ok {
		return nil, fmt.Errorf("%w: the driver cannot follow a job it did not start", hypervisor.ErrNoMigration)
	}
	m, err := ad.Adopt(ctx, vm, target)
	if err != nil {
		return nil, err
	}
	snap, err := f.state.Read(ctx)
	if rec, found := snap.InFlight[vm]; err == nil && found {
		return f.track(m, rec.Rev), nil
	}
	return m, nil
}
