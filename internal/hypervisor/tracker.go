package hypervisor

import (
	"context"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/model"
)

// Tracker is a ready-made Migration for drivers: the driver feeds it samples with
// Update and the outcome with Finish; readers use the Migration methods.
type Tracker struct {
	vm, src, dst string
	opts         model.StateTransferOptions
	start        time.Time
	abort        func(context.Context) error

	mu      sync.Mutex
	last    Progress
	updates chan Progress
	done    chan struct{}
	res     Result
	err     error
	closed  bool
}

// NewTracker returns a tracker for a migration that starts now; abort is what
// Migration.Abort calls.
func NewTracker(vm, src, dst string, opts model.StateTransferOptions, abort func(context.Context) error) *Tracker {
	return &Tracker{
		vm: vm, src: src, dst: dst, opts: opts, abort: abort,
		start:   time.Now(),
		last:    Progress{VM: vm, Source: src, Target: dst, Phase: PhaseStarting, Time: time.Now()},
		updates: make(chan Progress, 16),
		done:    make(chan struct{}),
	}
}

func (t *Tracker) VM() string                          { return t.vm }
func (t *Tracker) Source() string                      { return t.src }
func (t *Tracker) Target() string                      { return t.dst }
func (t *Tracker) Options() model.StateTransferOptions { return t.opts }
func (t *Tracker) Updates() <-chan Progress            { return t.updates }
func (t *Tracker) Done() <-chan struct{}               { return t.done }

// Started is when Migrate was called.
func (t *Tracker) Started() time.Time { return t.start }

// Progress returns the latest sample.
func (t *Tracker) Progress() Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// Update records a sample and offers it to the reader without blocking: a reader
// that falls behind skips samples, which are snapshots, not deltas.
func (t *Tracker) Update(p Progress) {
	p.VM, p.Source, p.Target = t.vm, t.src, t.dst
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.last = p
	select {
	case t.updates <- p:
	default:
	}
}

// Finish records the outcome, delivers the final sample and closes Updates and Done.
// Only the first call counts.
func (t *Tracker) Finish(res Result, err error) {
	res.VM, res.Source, res.Target = t.vm, t.src, t.dst
	if res.Wall == 0 {
		res.Wall = time.Since(t.start)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.last, t.res, t.err = res.Progress, res, err
	// The final sample must not be lost: make room by dropping the oldest. Only
	// this goroutine sends, so a freed slot stays free.
	for {
		select {
		case t.updates <- res.Progress:
			close(t.updates)
			close(t.done)
			return
		default:
			select {
			case <-t.updates:
			default:
			}
		}
	}
}

// Wait blocks until the migration is over or ctx ends.
func (t *Tracker) Wait(ctx context.Context) (Result, error) {
	select {
	case <-t.done:
	case <-ctx.Done():
		return Result{Progress: t.Progress()}, ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.res, t.err
}

// Abort cancels the migration.
func (t *Tracker) Abort(ctx context.Context) error {
	select {
	case <-t.done:
		return ErrNoMigration
	default:
	}
	return t.abort(ctx)
}
