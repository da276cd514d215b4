// Package store is headroom's durable event log: every decision with its reason,
// every migration with its options and predicted and measured figures, every failure.
// It is a bbolt file; each Append (or AppendAll, for several events) is its own
// fsynced transaction, so an event that Append returned for survives a crash.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/headroom/headroom/internal/model"
)

// Kinds of events.
const (
	Decision       = "decision"         // the core asked for a move
	NoSuitableHost = "no-suitable-host" // a VM that had to move found no host
	Skipped        = "skipped"          // a move not started (dry-run, limits, awaiting approval)
	Approved       = "approved"
	MigrationStart = "migration-start"
	MigrationEnd   = "migration-end"
	Failure        = "failure" // a host, VM or libvirt error
	Reconciled     = "reconciled"
	Drain          = "drain"
	// HostState: a host set aside as a migration target, or back in use.
	HostState = "host-state"
	// Warning: something in the configuration or the cluster an operator
	// should know, that stops nothing.
	Warning = "warning"
)

// Kinds lists the kinds of events this package defines.
var Kinds = []string{Decision, NoSuitableHost, Skipped, Approved, MigrationStart, MigrationEnd,
	Failure, Reconciled, Drain, HostState, Warning}

// States of a migration, in the order the controller records them (Event.State
// of a decision, approval, start, end or reconciliation). Each is written
// before the step it names is taken, so a restart knows how far a move got.
const (
	StatePlanned   = "planned"   // decision: the core asked for the move
	StateApproved  = "approved"  // approval (approve mode)
	StateStarted   = "started"   // migration-start, written before the hypervisor is asked
	StateVerifying = "verifying" // the job ended; where the VM runs is being checked
	// Final states, on migration-end or reconciled.
	StateCompleted = "completed" // the VM runs on the target only
	StateFailed    = "failed"    // the VM stayed on its source
	StateAborted   = "aborted"   // cancelled (timeout, stall, operator); on the source
	// StateNeedsAttention: the job is over but where the VM runs is not
	// known (a host does not answer); the record stays open, the VM is not
	// moved, and the controller keeps asking until it can close it.
	StateNeedsAttention = "needs-attention"
	// StateAdopted: reconciled after a restart while libvirt still ran the
	// job; a migration-end follows when it ends.
	StateAdopted = "adopted"
)

// Settled reports whether an end or reconciliation in state closes its
// migration's record: every state but adopted and needs-attention.
func Settled(state string) bool {
	return state != StateAdopted && state != StateNeedsAttention
}

// Event is one entry. Unused fields stay empty.
type Event struct {
	Seq     uint64                      `json:"seq"`
	Time    time.Time                   `json:"time"`
	Kind    string                      `json:"kind"`
	VM      string                      `json:"vm,omitempty"`
	Source  string                      `json:"source,omitempty"`
	Target  string                      `json:"target,omitempty"`
	Mode    string                      `json:"mode,omitempty"`
	Reason  *model.Reason               `json:"reason,omitempty"`
	Options *model.StateTransferOptions `json:"options,omitempty"`
	// Measured figures of a finished migration.
	Seconds    float64 `json:"seconds,omitempty"`
	DowntimeMs float64 `json:"downtime_ms,omitempty"`
	DataMiB    float64 `json:"data_mib,omitempty"`
	State      string  `json:"state,omitempty"` // completed, failed, cancelled, ...
	Error      string  `json:"error,omitempty"`
	Message    string  `json:"message,omitempty"`
	Host       string  `json:"host,omitempty"` // the host an event is about, if not a move
}

var (
	bEvents = []byte("events")
	bByVM   = []byte("by-vm")
)

// Log is an open event log. Safe for concurrent use.
type Log struct{ db *bolt.DB }

// ErrLocked: another process (a running controller) holds the log; bbolt lets
// one process open a file at a time.
var ErrLocked = errors.New("in use by another process")

// Open opens or creates the log at path.
func Open(path string) (*Log, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("event log %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bEvents, bByVM} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	return &Log{db: db}, nil
}

// Close closes the log.
func (l *Log) Close() error { return l.db.Close() }

func key(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// Append stores e, stamping its sequence number (and time, if unset), and returns it.
func (l *Log) Append(e Event) (Event, error) {
	es, err := l.AppendAll([]Event{e})
	if err != nil {
		return e, err
	}
	return es[0], nil
}

// AppendAll stores es in order in one transaction, one fsync for all: a
// cycle's decisions are written together before any of the moves they gate
// is taken, instead of paying a disk flush each. Either all of them are stored
// or, with an error, none. It returns them stamped as Append does; es itself is
// not changed.
func (l *Log) AppendAll(es []Event) ([]Event, error) {
	out := make([]Event, len(es))
	copy(out, es)
	if len(out) == 0 {
		return out, nil
	}
	now := time.Now()
	for i := range out {
		if out[i].Time.IsZero() {
			out[i].Time = now
		}
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bEvents)
		byVM := tx.Bucket(bByVM)
		for i := range out {
			e := &out[i]
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put(key(seq), v); err != nil {
				return err
			}
			if e.VM != "" {
				vb, err := byVM.CreateBucketIfNotExists([]byte(e.VM))
				if err != nil {
					return err
				}
				if err := vb.Put(key(seq), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		// bbolt rolled the transaction back: no event got its number.
		for i := range out {
			out[i].Seq = 0
		}
	}
	return out, err
}

// Filter selects events; zero fields match everything.
type Filter struct {
	VM    string
	Kind  string
	Since time.Time
	Limit int // the newest Limit events; 0 for all
}

// List returns matching events in order.
func (l *Log) List(f Filter) ([]Event, error) {
	var out []Event
	err := l.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bEvents)
		add := func(v []byte) error {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if (f.Kind == "" || e.Kind == f.Kind) && (f.Since.IsZero() || !e.Time.Before(f.Since)) {
				out = append(out, e)
			}
			return nil
		}
		if f.VM != "" {
			vb := tx.Bucket(bByVM).Bucket([]byte(f.VM))
			if vb == nil {
				return nil
			}
			return vb.ForEach(func(k, _ []byte) error { return add(events.Get(k)) })
		}
		return events.ForEach(func(_, v []byte) error { return add(v) })
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, err
}

// InFlight returns the migration-start events with no later end or reconciliation
// that settles them (see Settled) for the same VM: what a restarted controller
// must adopt or close.
func (l *Log) InFlight() ([]Event, error) {
	all, err := l.List(Filter{})
	if err != nil {
		return nil, err
	}
	open := map[string]Event{}
	for _, e := range all {
		switch e.Kind {
		case MigrationStart:
			open[e.VM] = e
		case MigrationEnd, Reconciled:
			if Settled(e.State) {
				delete(open, e.VM)
			}
		}
	}
	var out []Event
	for _, e := range all {
		if o, ok := open[e.VM]; ok && o.Seq == e.Seq {
			out = append(out, e)
		}
	}
	return out, nil
}
