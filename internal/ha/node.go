// Package ha runs several headroom controllers as one: an etcd election picks the
// leader, only the leader acts, and every migration start is fenced by an etcd
// transaction on the leader key, which also records the move in flight so that a
// new leader adopts it instead of starting it again. Followers keep observing and
// forecasting (a hot standby). This is the live shell's concern: nothing here is
// seen by the decision core.
//
// Keys under the prefix (default /headroom):
//
//	leader/<lease>   the election (concurrency.Election), bound to each node's lease
//	inflight/<vm>    a migration started and not yet closed (Record)
//	cooldown/<vm>    when the VM last finished a move
//	pending/<vm>     a move awaiting approval (approve mode)
//	approved/<vm>    an operator's approval, consumed by the leader
package ha

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Options configure a node.
type Options struct {
	Endpoints []string
	// Prefix of every key; default /headroom.
	Prefix string
	// TTL of the node's lease, whole seconds; default 5 s. A crashed leader is
	// replaced about TTL after it stopped renewing; a partitioned one stops
	// acting before its lease can have expired in etcd.
	TTL time.Duration
	// Name identifies the node in the election and the records; default the hostname.
	Name string
	// DialTimeout bounds the first connection; default 5 s.
	DialTimeout time.Duration
	// Logf reports elections and lost leases; default silent.
	Logf func(format string, args ...any)
}

// ErrNotLeader: this node is not the leader, or cannot be sure it still is.
var ErrNotLeader = errors.New("ha: not the leader")

// Term is one spell of leadership.
type Term struct {
	// Key and Rev are the election key and its create revision: every fenced
	// write compares them, so it fails once the key is gone (resigned or expired).
	Key   string
	Rev   int64
	Lease clientv3.LeaseID
	// N counts the terms this node has held, so a caller can tell a new one.
	N uint64
}

// Node is one replica's membership in the election.
type Node struct {
	opt    Options
	cli    *clientv3.Client
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// crashed stops the node without resigning (tests: a killed process).
	crashed bool

	mu       sync.Mutex
	term     Term // Key empty while not leading
	terms    uint64
	lease    clientv3.LeaseID
	deadline time.Time // when this node's lease may have expired in etcd, by the local clock
}

func (o *Options) defaults() {
	if o.Prefix == "" {
		o.Prefix = "/headroom"
	}
	if o.TTL == 0 {
		o.TTL = 5 * time.Second
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Validate names the first bad option.
func (o Options) Validate() error {
	switch {
	case len(o.Endpoints) == 0:
		return errors.New("endpoints: none given")
	case o.TTL != 0 && (o.TTL < 2*time.Second || o.TTL%time.Second != 0):
		return fmt.Errorf("ttl: %v must be whole seconds, at least 2 s", o.TTL)
	}
	return nil
}

// Start connects to etcd and joins the election in the background. The node
// acts only while Leading says so; Close leaves the election.
func Start(opt Options) (*Node, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	opt.defaults()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opt.Endpoints,
		DialTimeout:          opt.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", opt.Endpoints, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{opt: opt, cli: cli, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go n.run()
	return n, nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.opt.Name }

// Client is the node's etcd client.
func (n *Node) Client() *clientv3.Client { return n.cli }

// Prefix is the key prefix.
func (n *Node) Prefix() string { return n.opt.Prefix }

// guard is how much of the lease must be left to act: room for the call that
// follows a fenced write (a libvirt migrate request) and for clock-rate error.
func (n *Node) guard() time.Duration { return n.opt.TTL / 5 }

// Leading returns the current term if this node leads and its lease is, by the
// local clock, still safely alive. It needs no word from etcd: a node cut off
// stops leading when its last renewal runs out, before etcd can expire the
// lease and elect another.
func (n *Node) Leading() (Term, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.term.Key == "" || time.Until(n.deadline) <= n.guard() {
		return Term{}, false
	}
	return n.term, true
}

// Remaining is how long the current term may still act (0 if not leading).
func (n *Node) Remaining() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.term.Key == "" {
		return 0
	}
	return max(time.Until(n.deadline)-n.guard(), 0)
}

// Leader asks etcd who leads now ("" if nobody).
func (n *Node) Leader(ctx context.Context) (string, error) {
	resp, err := n.cli.Get(ctx, n.opt.Prefix+"/leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

func (n *Node) run() {
	defer close(n.done)
	for n.ctx.Err() == nil {
		if err := n.session(); err != nil && n.ctx.Err() == nil {
			n.opt.Logf("ha: %s: %v", n.opt.Name, err)
			select {
			case <-n.ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// session grants a lease, campaigns on it and leads until the lease is lost.
func (n *Node) session() error {
	ttl := int64(n.opt.TTL / time.Second)
	t0 := time.Now()
	gctx, gcancel := context.WithTimeout(n.ctx, n.opt.TTL)
	g, err := n.cli.Grant(gctx, ttl)
	gcancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	n.mu.Lock()
	n.lease = g.ID
	// The lease was granted after t0, so it lives at least until t0+TTL in etcd.
	n.deadline = t0.Add(time.Duration(g.TTL) * time.Second)
	n.mu.Unlock()

	sctx, scancel := context.WithCancel(n.ctx)
	defer scancel()
	sess, err := concurrency.NewSession(n.cli, concurrency.WithLease(g.ID), concurrency.WithContext(sctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	kadone := make(chan struct{})
	go func() {
		defer close(kadone)
		n.renew(sctx, g.ID)
		scancel()
	}()
	defer func() {
		scancel()
		<-kadone
		n.mu.Lock()
		n.term, n.lease = Term{}, 0
		crashed := n.crashed
		n.mu.Unlock()
		if crashed {
			return // a killed process leaves its lease to expire
		}
		sess.Orphan()
		// A clean stop hands over at once instead of after the TTL; cut off, the
		// revoke fails and the lease expires by itself.
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		n.cli.Revoke(rctx, g.ID)
		rcancel()
	}()

	el := concurrency.NewElection(sess, n.opt.Prefix+"/leader")
	if err := el.Campaign(sctx, n.opt.Name); err != nil {
		if sctx.Err() != nil {
			return nil // lease lost or stopping: campaign again with a new one
		}
		return fmt.Errorf("campaign: %w", err)
	}
	n.mu.Lock()
	n.terms++
	n.term = Term{Key: el.Key(), Rev: el.Rev(), Lease: g.ID, N: n.terms}
	n.mu.Unlock()
	n.opt.Logf("ha: %s leads (key %s rev %d)", n.opt.Name, el.Key(), el.Rev())
	select {
	case <-sctx.Done():
	case <-sess.Done():
	}
	n.opt.Logf("ha: %s no longer leads", n.opt.Name)
	return nil
}

// renew keeps the lease alive with one request at a time, each timed from before
// it was sent, so the deadline it sets is one etcd cannot beat: etcd extends the
// lease by its TTL on receiving the request, after the local send time. It
// returns when the lease is gone or the deadline passed without a renewal.
func (n *Node) renew(ctx context.Context, id clientv3.LeaseID) {
	every := n.opt.TTL / 4
	for {
		n.mu.Lock()
		left := time.Until(n.deadline)
		n.mu.Unlock()
		if left <= 0 {
			n.opt.Logf("ha: %s: lease %x ran out without a renewal", n.opt.Name, id)
			return
		}
		t0 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, min(every, left))
		resp, err := n.cli.KeepAliveOnce(rctx, id)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			n.opt.Logf("ha: %s: lease %x expired in etcd", n.opt.Name, id)
			n.mu.Lock()
			n.deadline = time.Time{}
			n.mu.Unlock()
			return
		case err == nil:
			n.mu.Lock()
			if d := t0.Add(time.Duration(resp.TTL) * time.Second); d.After(n.deadline) {
				n.deadline = d
			}
			n.mu.Unlock()
		}
		wait := every
		if err != nil {
			wait = every / 4 // retry sooner while the lease still has time
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(t0.Add(wait))):
		}
	}
}

// Close leaves the election (resigning, so another node takes over at once)
// and closes the client.
func (n *Node) Close() error {
	n.cancel()
	<-n.done
	return n.cli.Close()
}

// Crash stops the node as a killed process would: no resignation, no revoke; its
// lease runs out in etcd after the TTL. For tests.
func (n *Node) Crash() {
	n.mu.Lock()
	n.crashed = true
	n.mu.Unlock()
	n.cancel()
	<-n.done
	n.cli.Close()
}
