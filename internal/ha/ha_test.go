package ha

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/headroom/headroom/internal/ha/etcdtest"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
)

const ttl = 2 * time.Second

func startNode(t *testing.T, endpoint, name string) *Node {
	t.Helper()
	n, err := Start(Options{Endpoints: []string{endpoint}, Prefix: "/t", TTL: ttl, Name: name, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitLeader waits up to d for exactly one of nodes to lead and returns it.
func waitLeader(t *testing.T, d time.Duration, nodes ...*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var leaders []*Node
		for _, n := range nodes {
			if _, ok := n.Leading(); ok {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%d leaders at once", len(leaders))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader in %v", d)
	return nil
}

// counting counts Migrate calls per VM that reach the driver.
type counting struct {
	hypervisor.Driver
	mu    sync.Mutex
	calls map[string]int
}

func (c *counting) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	c.mu.Lock()
	c.calls[vm]++
	c.mu.Unlock()
	return c.Driver.Migrate(ctx, vm, target, o)
}

func (c *counting) n(vm string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[vm]
}

func cluster(t *testing.T) *memory.Driver {
	t.Helper()
	var hs []hypervisor.Host
	for _, id := range []string{"a", "b"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
	}
	d := memory.New(memory.Options{BandwidthMiBps: 100, Realtime: true}, hs...)
	t.Cleanup(func() { d.Close() })
	for _, vm := range []string{"v1", "v2"} {
		if err := d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 256}, memory.Usage{CPUUtil: 0.5}); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestElectionOneLeaderAndCrashFailover(t *testing.T) {
	srv := etcdtest.Start(t)
	nodes := []*Node{startNode(t, srv.Endpoint, "n1"), startNode(t, srv.Endpoint, "n2"), startNode(t, srv.Endpoint, "n3")}
	l := waitLeader(t, 10*time.Second, nodes...)
	name, err := l.Leader(context.Background())
	if err != nil || name != l.Name() {
		t.Fatalf("etcd says %q leads (%v), the node that leads is %s", name, err, l.Name())
	}
	t0 := time.Now()
	l.Crash()
	var rest []*Node
	for _, n := range nodes {
		if n != l {
			rest = append(rest, n)
		}
	}
	// A crashed leader's lease runs out after the TTL; then the next in line leads.
	l2 := waitLeader(t, 3*ttl+5*time.Second, rest...)
	t.Logf("%s took over from crashed %s in %.2f s (lease TTL %v)", l2.Name(), l.Name(), time.Since(t0).Seconds(), ttl)
	if _, ok := l.Leading(); ok {
		t.Error("the crashed node still says it leads")
	}
	// A clean stop resigns: the last node takes over without waiting for a TTL.
	t1 := time.Now()
	l2.Close()
	var last *Node
	for _, n := range rest {
		if n != l2 {
			last = n
		}
	}
	waitLeader(t, 3*ttl+5*time.Second, last)
	t.Logf("%s took over from resigned %s in %.2f s", last.Name(), l2.Name(), time.Since(t1).Seconds())
}

func TestFencedMigrateOnlyByTheLeaderAndOncePerVM(t *testing.T) {
	srv := etcdtest.Start(t)
	d := cluster(t)
	n1 := startNode(t, srv.Endpoint, "n1")
	l := waitLeader(t, 10*time.Second, n1)
	n2 := startNode(t, srv.Endpoint, "n2")
	time.Sleep(200 * time.Millisecond)
	if _, ok := n2.Leading(); ok {
		t.Fatal("two leaders")
	}
	cl, cf := &counting{Driver: d, calls: map[string]int{}}, &counting{Driver: d, calls: map[string]int{}}
	lead, follow := Fence(cl, l), Fence(cf, n2)
	ctx := context.Background()
	lead.VMs(ctx)
	if _, err := follow.Migrate(ctx, "v1", "b", model.StateTransferOptions{}); !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrFenced) || !Refused(err) {
		t.Errorf("a follower's migrate: %v, want ErrNotLeader marked ErrFenced", err)
	}
	if cf.n("v1") != 0 {
		t.Errorf("a follower's migrate reached the driver")
	}
	// Slow enough to still be in flight for the second call.
	m, err := lead.Migrate(ctx, "v1", "b", model.StateTransferOptions{BandwidthMiBps: 128})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := lead.State().Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := snap.InFlight["v1"]
	if !ok || rec.Source != "a" || rec.Target != "b" || rec.Leader != "n1" || rec.Rev == 0 {
		t.Fatalf("record in etcd: %+v (found %v), want v1 a->b by n1", rec, ok)
	}
	if _, err := lead.Migrate(ctx, "v1", "b", model.StateTransferOptions{}); !errors.Is(err, ErrInFlight) || !errors.Is(err, ErrFenced) {
		t.Errorf("second migrate of v1 in flight: %v, want ErrInFlight marked ErrFenced", err)
	}
	if cl.n("v1") != 1 {
		t.Errorf("%d migrate calls of v1 reached the driver, want 1", cl.n("v1"))
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := m.Wait(wctx)
	if err != nil || res.Phase != hypervisor.PhaseCompleted {
		t.Fatalf("migration: %v %v", res.Phase, err)
	}
	snap, _ = lead.State().Read(ctx)
	if _, open := snap.InFlight["v1"]; open {
		t.Error("the record is still open after the migration was done")
	}
	if c, ok := snap.Cooldowns["v1"]; !ok || time.Since(c) > time.Minute {
		t.Errorf("cooldown of v1: %v %v, want just now", c, ok)
	}
	// A refused migrate leaves no record behind; the driver's refusal is not
	// the fence's.
	if _, err := lead.Migrate(ctx, "v1", "b", model.StateTransferOptions{}); !errors.Is(err, hypervisor.ErrSameHost) || Refused(err) {
		t.Errorf("migrate v1 onto its own host: %v (want the driver's refusal, not the fence's)", err)
	}
	snap, _ = lead.State().Read(ctx)
	if len(snap.InFlight) != 0 {
		t.Errorf("records left after a refused migrate: %v", snap.InFlight)
	}
}

// The etcd side of the fence alone: once the leader's lease is gone in etcd,
// its write fails even though the node has not noticed yet.
func TestFenceRejectsAnExpiredTerm(t *testing.T) {
	srv := etcdtest.Start(t)
	n := startNode(t, srv.Endpoint, "n1")
	l := waitLeader(t, 10*time.Second, n)
	term, _ := l.Leading()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	if _, err := cli.Revoke(ctx, term.Lease); err != nil {
		t.Fatal(err)
	}
	_, err = NewState(cli, "/t").Begin(ctx, term, Record{VM: "v1", Target: "b"})
	if !errors.Is(err, ErrNotLeader) {
		t.Errorf("write on a revoked term: %v, want ErrNotLeader", err)
	}
	// The node finds out from its next renewal and stops leading.
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		if cur, ok := l.Leading(); !ok || cur.N != term.N {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("the node still leads in its revoked term")
}

// A leader cut off from etcd (a silent partition: no reset, no answer) stops
// leading by its own lease clock, within the TTL of the cut, and starts no
// migration; another node takes over and can.
func TestPartitionedLeaderStartsNoMigration(t *testing.T) {
	srv := etcdtest.Start(t)
	d := cluster(t)
	px := etcdtest.NewProxy(t, srv.Addr)
	a := startNode(t, px.Endpoint, "a")
	waitLeader(t, 10*time.Second, a)
	b := startNode(t, srv.Endpoint, "b")
	ca, cb := &counting{Driver: d, calls: map[string]int{}}, &counting{Driver: d, calls: map[string]int{}}
	fa, fb := Fence(ca, a), Fence(cb, b)
	ctx := context.Background()
	fa.VMs(ctx)
	fb.VMs(ctx)

	px.Cut()
	t0 := time.Now()
	// The old leader keeps trying, as a controller whose plan wants a move would.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var tries int
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			tries++
			mctx, cancel := context.WithTimeout(ctx, time.Second)
			if m, err := fa.Migrate(mctx, "v2", "b", model.StateTransferOptions{}); err == nil {
				t.Errorf("the partitioned leader started a migration (%s) %.2f s after the cut", m.VM(), time.Since(t0).Seconds())
			} else if !Refused(err) {
				// An etcd timeout is the fence's, not the target host's.
				t.Errorf("the partitioned leader's refusal %v is not marked as the fence's", err)
			}
			cancel()
		}
	}()
	var stopped time.Duration
	for time.Since(t0) < ttl+time.Second {
		if _, ok := a.Leading(); !ok && stopped == 0 {
			stopped = time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if stopped == 0 {
		t.Fatalf("the partitioned leader still leads %v after the cut (lease TTL %v)", ttl+time.Second, ttl)
	}
	l := waitLeader(t, 3*ttl+5*time.Second, a, b)
	took := time.Since(t0)
	if l != b {
		t.Fatalf("%s leads, want b", l.Name())
	}
	m, err := fb.Migrate(ctx, "v1", "b", model.StateTransferOptions{})
	if err != nil {
		t.Fatalf("the new leader's migrate: %v", err)
	}
	close(stop)
	wg.Wait()
	if ca.n("v2") != 0 {
		t.Errorf("%d migrate calls from the partitioned leader reached the driver", ca.n("v2"))
	}
	fmt.Printf("PARTITION old_leader_stopped_s=%.2f new_leader_s=%.2f old_leader_tries=%d old_leader_migrations=%d ttl_s=%.0f\n",
		stopped.Seconds(), took.Seconds(), tries, ca.n("v2"), ttl.Seconds())
	// Healed, the old leader comes back as a follower.
	px.Heal()
	time.Sleep(ttl)
	if _, ok := a.Leading(); ok {
		t.Error("the healed old leader leads beside the new one")
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := m.Wait(wctx); err != nil {
		t.Error(err)
	}
}

// A new leader adopts a move the old one recorded: it watches it to its end,
// closes the record and never calls migrate.
func TestAdoptRecordWatchesToTheEnd(t *testing.T) {
	srv := etcdtest.Start(t)
	d := cluster(t)
	n1 := startNode(t, srv.Endpoint, "n1")
	waitLeader(t, 10*time.Second, n1)
	c1 := &counting{Driver: d, calls: map[string]int{}}
	f1 := Fence(c1, n1)
	ctx := context.Background()
	f1.VMs(ctx)
	if _, err := f1.Migrate(ctx, "v1", "b", model.StateTransferOptions{BandwidthMiBps: 64}); err != nil {
		t.Fatal(err)
	}
	n1.Crash()
	n2 := startNode(t, srv.Endpoint, "n2")
	waitLeader(t, 3*ttl+5*time.Second, n2)
	c2 := &counting{Driver: d, calls: map[string]int{}}
	f2 := Fence(c2, n2)
	f2.Poll = 200 * time.Millisecond
	snap, err := f2.State().Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := snap.InFlight["v1"]
	if !ok {
		t.Fatal("no record of v1 in flight for the new leader")
	}
	if loc, _ := d.Locate(ctx, "v1"); loc.Host != "a" {
		t.Fatalf("v1 already on %s: the migration was too quick for the test", loc.Host)
	}
	m := f2.AdoptRecord(ctx, rec)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := m.Wait(wctx)
	if err != nil || res.Phase != hypervisor.PhaseCompleted {
		t.Fatalf("adopted: %v %v", res.Phase, err)
	}
	if loc, _ := d.Locate(ctx, "v1"); loc.Host != "b" {
		t.Errorf("v1 on %s after the adopted move, want b", loc.Host)
	}
	snap, _ = f2.State().Read(ctx)
	if _, open := snap.InFlight["v1"]; open {
		t.Error("the adopted record is still open")
	}
	if c2.n("v1") != 0 {
		t.Errorf("the new leader called migrate %d times for the adopted move", c2.n("v1"))
	}
	// A record of a move that never started is closed as unmoved.
	t2, _ := n2.Leading()
	rev, err := f2.State().Begin(ctx, t2, Record{VM: "v2", Source: "a", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	res, err = f2.AdoptRecord(ctx, Record{VM: "v2", Source: "a", Target: "b", Rev: rev}).Wait(wctx)
	if !errors.Is(err, ErrEndedUnmoved) {
		t.Errorf("adopting a move never started: %v %v, want ErrEndedUnmoved", res.Phase, err)
	}
	snap, _ = f2.State().Read(ctx)
	if len(snap.InFlight) != 0 || c2.n("v2") != 0 {
		t.Errorf("records %v, migrate calls %d after adopting a move never started", snap.InFlight, c2.n("v2"))
	}
}

func TestApprovalsAndPendingSharedThroughEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	n := startNode(t, srv.Endpoint, "n1")
	waitLeader(t, 10*time.Second, n)
	st := NewState(n.Client(), n.Prefix())
	ctx := context.Background()
	if _, err := st.Approve(ctx, "v1"); !errors.Is(err, ErrNotPending) {
		t.Errorf("approving a move nobody waits on: %v", err)
	}
	term, _ := n.Leading()
	m := model.MigrationRequest{VMInstanceID: "v1", TargetHostID: "b", Reason: model.Reason{Rule: "overload"}}
	if err := st.SavePending(ctx, term, map[string]model.MigrationRequest{"v1": m}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Approve(ctx, "v1"); err != nil || got.TargetHostID != "b" {
		t.Fatalf("approve: %+v %v", got, err)
	}
	snap, _ := st.Read(ctx)
	if !snap.Approved["v1"] || snap.Pending["v1"].Reason.Rule != "overload" {
		t.Fatalf("state after approval: %+v", snap)
	}
	if err := st.SavePending(ctx, term, nil, []string{"v1"}, []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	snap, _ = st.Read(ctx)
	if len(snap.Pending)+len(snap.Approved) != 0 {
		t.Errorf("consumed approval left behind: %+v", snap)
	}
	// A rejection, on any node, drops the pending move and its approval.
	if err := st.SavePending(ctx, term, map[string]model.MigrationRequest{"v1": m}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Approve(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Reject(ctx, "v1"); err != nil || got.TargetHostID != "b" {
		t.Fatalf("reject: %+v %v", got, err)
	}
	if snap, _ = st.Read(ctx); len(snap.Pending)+len(snap.Approved) != 0 {
		t.Errorf("rejected move left behind: %+v", snap)
	}
	if _, err := st.Reject(ctx, "v1"); !errors.Is(err, ErrNotPending) {
		t.Errorf("rejecting a move nobody waits on: %v", err)
	}
	// Nor can the zero term of a node that never led.
	if err := st.SavePending(ctx, Term{}, map[string]model.MigrationRequest{"v2": m}, nil, nil); !errors.Is(err, ErrNotLeader) {
		t.Errorf("the zero term's write: %v, want ErrNotLeader", err)
	}
	if _, err := st.Begin(ctx, Term{}, Record{VM: "v2", Target: "b"}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("the zero term's begin: %v, want ErrNotLeader", err)
	}
	// A stale term cannot write.
	stale := term
	stale.Rev--
	if err := st.SavePending(ctx, stale, map[string]model.MigrationRequest{"v2": m}, nil, nil); !errors.Is(err, ErrNotLeader) {
		t.Errorf("a stale term's write: %v, want ErrNotLeader", err)
	}
}
