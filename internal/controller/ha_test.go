package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/ha"
	"github.com/headroom/headroom/internal/ha/etcdtest"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// tally sees every migrate call that reaches the (shared, in-memory) driver,
// from whichever replica.
type tally struct {
	mu     sync.Mutex
	calls  []migrateCall
	moving map[string]bool
	// dups are calls for a VM whose migration is still running: the second
	// migrate call HA must never make.
	dups int
}

type migrateCall struct {
	replica, vm string
	at          time.Time
}

func (t *tally) since(replica string, from time.Time) []migrateCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []migrateCall
	for _, c := range t.calls {
		if (replica == "" || c.replica == replica) && !c.at.Before(from) {
			out = append(out, c)
		}
	}
	return out
}

// replicaDriver is one replica's view of the shared driver: it counts its
// calls and slows every move to 16 MiB/s, so a 256 MiB VM is in flight for
// about 16 s, long enough to kill its leader mid-move.
type replicaDriver struct {
	hypervisor.Driver
	name string
	t    *tally
}

func (r *replicaDriver) Migrate(ctx context.Context, vm, target string, o model.StateTransferOptions) (hypervisor.Migration, error) {
	r.t.mu.Lock()
	if r.t.moving[vm] {
		r.t.dups++
	}
	r.t.calls = append(r.t.calls, migrateCall{r.name, vm, time.Now()})
	r.t.mu.Unlock()
	o.BandwidthMiBps, o.ParallelStreams = 16, 1
	m, err := r.Driver.Migrate(ctx, vm, target, o)
	if err == nil {
		r.t.mu.Lock()
		r.t.moving[vm] = true
		r.t.mu.Unlock()
		go func() {
			<-m.Done()
			r.t.mu.Lock()
			delete(r.t.moving, vm)
			r.t.mu.Unlock()
		}()
	}
	return m, err
}

type replica struct {
	name   string
	c      *Controller
	node   *ha.Node
	log    *store.Log
	proxy  *etcdtest.Proxy
	cancel context.CancelFunc
	done   chan struct{}
	// forecasts counts this replica's cycles that forecast every VM.
	forecasts atomic.Int64
}

func leaderOf(rs []*replica) *replica {
	var out *replica
	for _, r := range rs {
		if _, ok := r.node.Leading(); ok {
			if out != nil {
				return nil // two at once: the caller's check fails
			}
			out = r
		}
	}
	return out
}

// poll reports whether cond held within d.
func poll(d time.Duration, cond func() bool) bool {
	for t0 := time.Now(); time.Since(t0) < d; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// waitFor polls cond every 10 ms for up to d and reports how long it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for time.Since(t0) < d {
		if cond() {
			return time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, d)
	return 0
}

// Three replicas of the controller on one real etcd (started here) and one
// shared in-memory hypervisor (a fake: the hypervisor is not what is under
// test). Kill the leader mid-move: another takes over, adopts the move and
// never calls migrate for it. Then partition the new leader from etcd: it
// starts nothing after the cut, and the third takes over and acts.
func TestHAFailover(t *testing.T) {
	srv := etcdtest.Start(t)
	var hs []hypervisor.Host
	var hcs []HostConfig
	for _, id := range []string{"a", "b", "c"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{BandwidthMiBps: 100, Realtime: true}, hs...)
	defer d.Close()
	vms := []string{"v1", "v2", "v3"}
	load := func(u float64) {
		for _, vm := range vms {
			d.SetUsage(vm, memory.Usage{CPUUtil: u})
		}
	}
	for _, vm := range vms {
		if err := d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 256}, memory.Usage{CPUUtil: 0.2}); err != nil {
			t.Fatal(err)
		}
	}
	const ttl = 5 * time.Second // the default lease
	// A short horizon and cooldown suit a 1 s interval; no consolidation, so
	// the only moves are the overloads the test makes.
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("horizon: 1m\nanti_thrash: {cooldown: 1m}\nunderload: {enabled: false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := &tally{moving: map[string]bool{}}
	var rs []*replica
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("r%d", i)
		px := etcdtest.NewProxy(t, srv.Addr)
		log, err := store.Open(filepath.Join(t.TempDir(), name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		cfg := Config{Interval: time.Second, Mode: Auto, Hosts: hcs, Policy: "headroom:" + pol,
			HA: HAConfig{Endpoints: []string{px.Endpoint}, Prefix: "/hr", LeaseTTL: ttl, Node: name}}
		c, err := New(cfg, &replicaDriver{Driver: d, name: name, t: tl}, log)
		if err != nil {
			t.Fatal(err)
		}
		node, err := ha.Start(cfg.HA.Options())
		if err != nil {
			t.Fatal(err)
		}
		c.UseHA(node)
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{name: name, c: c, node: node, log: log, proxy: px, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			c.Run(ctx, func(cy Cycle, err error) {
				if err == nil && cy.Snapshot != nil && len(cy.Forecasts) == len(cy.Snapshot.VMs) && len(cy.Forecasts) > 0 {
					r.forecasts.Add(1)
				}
			})
		}()
		rs = append(rs, r)
	}
	defer func() {
		// Moves still running would hold each Run until they end.
		for _, vm := range []string{"v1", "v2", "v3", "v4", "v5", "v6"} {
			d.Abort(context.Background(), vm)
		}
		for _, r := range rs {
			r.cancel()
			r.node.Close()
			<-r.done
		}
	}()

	// One leader; the standbys run their cycles (observe, forecast) but act on nothing.
	waitFor(t, 15*time.Second, "a first leader", func() bool { return leaderOf(rs) != nil })
	l1 := leaderOf(rs)
	time.Sleep(time.Second)
	if len(tl.since("", time.Time{})) != 0 {
		t.Fatalf("moves started with no overload: %v", tl.since("", time.Time{}))
	}

	// Phase 1: overload host a; the leader starts a move; kill it mid-move.
	load(0.9)
	waitFor(t, 15*time.Second, "the leader's first move", func() bool { return len(tl.since("", time.Time{})) > 0 })
	first := tl.since("", time.Time{})[0]
	if first.replica != l1.name {
		t.Fatalf("%s started a move; %s leads", first.replica, l1.name)
	}
	vm := first.vm
	load(0.2) // no further moves wanted: any later migrate call is the one under test
	time.Sleep(300 * time.Millisecond)
	if loc, _ := d.Locate(context.Background(), vm); loc.Host != "a" {
		t.Fatalf("%s already moved to %s before the kill: too quick for the test", vm, loc.Host)
	}
	standby := map[string]int64{} // forecasting cycles each replica ran before the kill
	for _, r := range rs {
		standby[r.name] = r.forecasts.Load()
	}
	l1.node.Crash() // SIGKILL: no resignation, the lease runs out in etcd
	l1.cancel()
	var l2 *replica
	takeover := waitFor(t, 30*time.Second, "a new leader after the kill", func() bool { l2 = leaderOf(rs); return l2 != nil })
	adopted := waitFor(t, 30*time.Second, "the new leader adopting "+vm, func() bool {
		in := l2.c.InFlight()
		return len(in) == 1 && in[0] == vm
	})
	adopted += takeover
	waitFor(t, 60*time.Second, "the adopted move to end", func() bool { return len(l2.c.InFlight()) == 0 })
	tl.mu.Lock()
	dups := tl.dups
	tl.mu.Unlock()
	calls := 0
	for _, c := range tl.since("", time.Time{}) {
		if c.vm == vm {
			calls++
		}
	}
	fmt.Printf("FAILOVER takeover_s=%.2f duplicates=%d adopted_s=%.2f migrate_calls_%s=%d lease_ttl_s=%.0f interval_s=1 (3 replicas, real etcd %s, in-memory hypervisor)\n",
		takeover.Seconds(), dups+calls-1, adopted.Seconds(), vm, calls, ttl.Seconds(), srv.Endpoint)
	// The lease design bounds takeover by the TTL (5 s) plus a renewal period;
	// 15 s is the acceptance bound, three times that, for a loaded machine.
	if takeover > 15*time.Second {
		t.Errorf("takeover took %v, want at most 15 s with a %v lease", takeover, ttl)
	}
	if dups != 0 || calls != 1 {
		t.Errorf("%d migrate calls of %s reached the driver (%d while it was in flight); want exactly the first", calls, vm, dups)
	}
	if loc, _ := d.Locate(context.Background(), vm); loc.Host == "a" {
		t.Errorf("%s still on a after the adopted move", vm)
	}
	// The standby that took over had been forecasting all along (hot standby).
	if n, led := standby[l2.name], standby[l1.name]; n < 1 || n+1 < led {
		t.Errorf("the new leader forecast in %d cycles as a standby, the old leader in %d: want a hot standby's every cycle", n, led)
	}
	es, _ := l2.log.List(store.Filter{VM: vm})
	var sawAdopt, sawEnd bool
	for _, e := range es {
		sawAdopt = sawAdopt || (e.Kind == store.Reconciled && e.State == "adopted")
		sawEnd = sawEnd || (e.Kind == store.MigrationEnd && e.State == string(hypervisor.PhaseCompleted))
	}
	if !sawAdopt || !sawEnd {
		t.Errorf("the new leader's log of %s: %+v; want its adoption and completed end", vm, es)
	}
	st, err := ha.NewState(l2.node.Client(), "/hr").Read(context.Background())
	if err != nil || len(st.InFlight) != 0 || st.Cooldowns[vm].IsZero() {
		t.Errorf("etcd after the adopted move: in flight %v, cooldown of %s %v (%v); want closed and stamped", st.InFlight, vm, st.Cooldowns[vm], err)
	}

	// Phase 2: cut the leader off from etcd and overload again.
	t1 := time.Now()
	l2.proxy.Cut()
	for _, vm := range []string{"v4", "v5", "v6"} { // host c overloaded as a was
		if err := d.AddVM(hypervisor.VM{ID: vm, Host: "c", VCPUs: 1, MemMiB: 256}, memory.Usage{CPUUtil: 0.9}); err != nil {
			t.Fatal(err)
		}
	}
	stopped := waitFor(t, ttl+time.Second, "the partitioned leader to stop leading", func() bool {
		_, ok := l2.node.Leading()
		return !ok
	})
	var l3 *replica
	waitFor(t, 30*time.Second, "a leader after the partition", func() bool { l3 = leaderOf(rs); return l3 != nil && l3 != l2 })
	takeover2 := time.Since(t1)
	if !poll(30*time.Second, func() bool { return len(tl.since(l3.name, t1)) > 0 }) {
		es, _ := l3.log.List(store.Filter{Limit: 20})
		t.Fatalf("the third leader %s started no move in 30 s; its last events: %+v", l3.name, es)
	}
	if got := tl.since(l2.name, t1); len(got) != 0 {
		t.Errorf("the partitioned leader made %d migrate calls after the cut: %v", len(got), got)
	}
	fmt.Printf("PARTITION stopped_leading_s=%.2f new_leader_s=%.2f partitioned_migrate_calls=%d lease_ttl_s=%.0f\n",
		stopped.Seconds(), takeover2.Seconds(), len(tl.since(l2.name, t1)), ttl.Seconds())
	// Healed, it rejoins as a standby.
	l2.proxy.Heal()
	time.Sleep(2 * time.Second)
	if _, ok := l2.node.Leading(); ok {
		t.Error("the healed old leader leads again beside the third")
	}
	if got := tl.since(l2.name, t1); len(got) != 0 {
		t.Errorf("the old leader made %d migrate calls after the cut and heal", len(got))
	}
}

// Without an ha section the controller is alone and acts, as before HA.
func TestWithoutHAOneNodeActsAlone(t *testing.T) {
	c, _, _ := lab(t, Auto, 0.9)
	if !c.Leading() || c.ha != nil {
		t.Fatal("a controller without an ha section does not lead")
	}
	stop, err := c.StartHA()
	if err != nil || c.ha != nil {
		t.Fatalf("StartHA without an ha section: %v, ha %v", err, c.ha != nil)
	}
	stop()
	cy, err := c.Step(context.Background())
	if err != nil || len(cy.Started) != 1 {
		t.Fatalf("started %v (%v), want the move off the overloaded host", cy.Started, err)
	}
}
