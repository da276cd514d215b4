package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/headroom/headroom/internal/model"
)

// Record is a migration in flight as etcd holds it.
type Record struct {
	VM      string                     `json:"vm"`
	Source  string                     `json:"source,omitempty"`
	Target  string                     `json:"target"`
	Options model.StateTransferOptions `json:"options"`
	// Leader is the node that started it, in term LeaderRev.
	Leader    string    `json:"leader"`
	LeaderRev int64     `json:"leader_rev"`
	Started   time.Time `json:"started"`
	// Rev is the record's mod revision in etcd, what closing it compares.
	Rev int64 `json:"-"`
}

// Errors of fenced writes.
var (
	// ErrInFlight: etcd already records a migration of the VM.
	ErrInFlight = errors.New("ha: a migration of this vm is already recorded in flight")
	// ErrNotPending: an approval for a move nobody waits on.
	ErrNotPending = errors.New("ha: no move of this vm is awaiting approval")
)

// State is the shared state in etcd a new leader needs.
type State struct {
	cli    *clientv3.Client
	prefix string
}

// NewState reads and writes the state under prefix.
func NewState(cli *clientv3.Client, prefix string) *State { return &State{cli: cli, prefix: prefix} }

const (
	kInFlight = "inflight"
	kCooldown = "cooldown"
	kPending  = "pending"
	kApproved = "approved"
)

// key is prefix/kind/<vm>, the VM's name escaped so a '/' in it cannot make a
// key of another kind.
func (s *State) key(kind, vm string) string {
	return s.prefix + "/" + kind + "/" + url.PathEscape(vm)
}

// ParseKey splits a state key into its kind and VM; ok is false for keys of
// no kind (the election's among them).
func ParseKey(prefix, key string) (kind, vm string, ok bool) {
	rest, found := strings.CutPrefix(key, prefix+"/")
	if !found {
		return "", "", false
	}
	kind, esc, found := strings.Cut(rest, "/")
	if !found || esc == "" {
		return "", "", false
	}
	switch kind {
	case kInFlight, kCooldown, kPending, kApproved:
	default:
		return "", "", false
	}
	vm, err := url.PathUnescape(esc)
	if err != nil || vm == "" {
		return "", "", false
	}
	return kind, vm, true
}

// Snapshot is the whole shared state at one etcd revision.
type Snapshot struct {
	InFlight  map[string]Record
	Cooldowns map[string]time.Time
	Pending   map[string]model.MigrationRequest
	Approved  map[string]bool
	// Bad lists keys whose values could not be read; they are left alone.
	Bad []string
}

// Read returns the shared state in one request.
func (s *State) Read(ctx context.Context) (Snapshot, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{InFlight: map[string]Record{}, Cooldowns: map[string]time.Time{},
		Pending: map[string]model.MigrationRequest{}, Approved: map[string]bool{}}
	for _, kv := range resp.Kvs {
		kind, vm, ok := ParseKey(s.prefix, string(kv.Key))
		if !ok {
			continue
		}
		if err := snap.add(kind, vm, kv.Value, kv.ModRevision); err != nil {
			snap.Bad = append(snap.Bad, string(kv.Key))
		}
	}
	return snap, nil
}

func (snap *Snapshot) add(kind, vm string, v []byte, rev int64) error {
	switch kind {
	case kInFlight:
		r, err := DecodeRecord(v)
		if err != nil {
			return err
		}
		if r.VM != vm {
			return fmt.Errorf("record of %q under %q", r.VM, vm)
		}
		r.Rev = rev
		snap.InFlight[vm] = r
	case kCooldown:
		var t time.Time
		if err := t.UnmarshalText(v); err != nil {
			return err
		}
		snap.Cooldowns[vm] = t
	case kPending:
		var m model.MigrationRequest
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		snap.Pending[vm] = m
	case kApproved:
		snap.Approved[vm] = true
	}
	return nil
}

// DecodeRecord reads an in-flight record, refusing one without a VM or target.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, err
	}
	if r.VM == "" || r.Target == "" {
		return Record{}, errors.New("record without vm or target")
	}
	return r, nil
}

// valid: a term a node won. The zero Term must never pass the compare: a
// missing key "" has create revision 0 too.
func (t Term) valid() bool { return t.Key != "" && t.Rev > 0 }

// leaderCmp holds while term's election key is the one it created: gone once
// the leader resigned or its lease expired.
func leaderCmp(t Term) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.Key), "=", t.Rev)
}

// Begin records rec in flight if term still leads and no migration of the VM is
// recorded; it returns the record's revision. Both conditions are checked by
// etcd in the same transaction that writes the record.
func (s *State) Begin(ctx context.Context, t Term, rec Record) (int64, error) {
	if !t.valid() {
		return 0, ErrNotLeader
	}
	k := s.key(kInFlight, rec.VM)
	v, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	resp, err := s.cli.Txn(ctx).
		If(leaderCmp(t), clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).
		Else(clientv3.OpGet(t.Key, clientv3.WithCountOnly()), clientv3.OpGet(k, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return 0, fmt.Errorf("%w (election key %s gone)", ErrNotLeader, t.Key)
		}
		if resp.Responses[1].GetResponseRange().Count > 0 {
			return 0, fmt.Errorf("%w: %s", ErrInFlight, rec.VM)
		}
		return 0, fmt.Errorf("%w (election key %s recreated)", ErrNotLeader, t.Key)
	}
	return resp.Header.Revision, nil
}

// End closes the record of vm written at rev (a later record of the same VM is
// left alone) and, if the VM moved, stamps its cooldown. It needs no
// leadership: the migration is over whoever watched it.
func (s *State) End(ctx context.Context, vm string, rev int64, moved bool, at time.Time) error {
	k := s.key(kInFlight, vm)
	ops := []clientv3.Op{clientv3.OpDelete(k)}
	if moved {
		b, _ := at.MarshalText()
		ops = append(ops, clientv3.OpPut(s.key(kCooldown, vm), string(b)))
	}
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(ops...).Commit()
	return err
}

// SavePending writes the leader's approval queue: put adds or replaces pending
// moves, drop removes pending moves and consumed removes approvals. Fenced on
// term like Begin.
func (s *State) SavePending(ctx context.Context, t Term, put map[string]model.MigrationRequest, drop, consumed []string) error {
	if len(put)+len(drop)+len(consumed) == 0 {
		return nil
	}
	if !t.valid() {
		return ErrNotLeader
	}
	var ops []clientv3.Op
	for vm, m := range put {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.key(kPending, vm), string(b)))
	}
	for _, vm := range drop {
		ops = append(ops, clientv3.OpDelete(s.key(kPending, vm)))
	}
	for _, vm := range consumed {
		ops = append(ops, clientv3.OpDelete(s.key(kApproved, vm)))
	}
	resp, err := s.cli.Txn(ctx).If(leaderCmp(t)).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Approve records an operator's approval of vm's pending move; any node may
// take it, the leader consumes it.
func (s *State) Approve(ctx context.Context, vm string) (model.MigrationRequest, error) {
	pk := s.key(kPending, vm)
	return s.onPending(ctx, vm, 1,
		clientv3.OpPut(s.key(kApproved, vm), time.Now().UTC().Format(time.RFC3339Nano)), clientv3.OpGet(pk))
}

// Reject drops vm's pending move and any approval of it; any node may take
// it. A later cycle of the leader may propose the move again.
func (s *State) Reject(ctx context.Context, vm string) (model.MigrationRequest, error) {
	pk := s.key(kPending, vm)
	return s.onPending(ctx, vm, 0, clientv3.OpGet(pk), clientv3.OpDelete(pk), clientv3.OpDelete(s.key(kApproved, vm)))
}

// onPending applies ops in one transaction if vm has a pending move, and
// returns that move as op number get read it.
func (s *State) onPending(ctx context.Context, vm string, get int, ops ...clientv3.Op) (model.MigrationRequest, error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.key(kPending, vm)), ">", 0)).
		Then(ops...).
		Commit()
	if err != nil {
		return model.MigrationRequest{}, err
	}
	if !resp.Succeeded {
		return model.MigrationRequest{}, fmt.Errorf("%w: %s", ErrNotPending, vm)
	}
	var m model.MigrationRequest
	if kvs := resp.Responses[get].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &m); err != nil {
			return m, fmt.Errorf("ha: pending move of %s in etcd: %w", vm, err)
		}
	}
	return m, nil
}
