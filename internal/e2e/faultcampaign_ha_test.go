package e2e

// The leader-lost fault of the campaign: two replicas of the controller on a
// real etcd (Debian's etcd-server, started by etcdtest), the leader killed
// mid-move.

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/ha"
	"github.com/headroom/headroom/internal/ha/etcdtest"
	"github.com/headroom/headroom/internal/store"
)

// leaseTTL is the replicas' etcd lease: a dead leader is replaced about this
// long after it died.
const leaseTTL = 3 * time.Second

// faultLeaderLost: replica r1, on the campaign's log, is elected on etcd, then
// r2 (on its own log) joins as a hot standby. r1 starts a move and is killed
// mid-move (its lease left to run out, as after SIGKILL). r2 takes over within
// the lease, adopts the move from etcd and follows it to its end, never calling
// migrate. r1 then restarts on its log (alone) and closes its open record.
func (cp *campaign) faultLeaderLost(srv *etcdtest.Server, round int) {
	t := cp.t
	t0 := time.Now()
	vm := "fa"
	src := cp.where[vm]
	dst := cp.target(vm)
	seq := cp.lastSeq()
	prefix := fmt.Sprintf("/faults%d", round)
	join := func(name string, log *store.Log) (*ctl, *ha.Node) {
		hc := controller.HAConfig{Endpoints: []string{srv.Endpoint}, Prefix: prefix, LeaseTTL: leaseTTL, Node: name}
		x := cp.newCtlOn(log, controller.Auto, hc, vm, dst)
		node, err := ha.Start(hc.Options())
		if err != nil {
			t.Fatal(err)
		}
		x.c.UseHA(node)
		return x, node
	}
	waitLead := func(n *ha.Node, d time.Duration) time.Duration {
		t0 := time.Now()
		for time.Since(t0) < d {
			if _, ok := n.Leading(); ok {
				return time.Since(t0)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return 0
	}
	r1, n1 := cp.newHA(join, "r1", cp.log)
	if waitLead(n1, 30*time.Second) == 0 {
		t.Fatal("r1 was not elected within 30s")
	}
	log2, err := store.Open(filepath.Join(t.TempDir(), "r2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer log2.Close()
	r2, n2 := join("r2", log2)
	r2.c.Step(context.Background()) // the standby observes, acts on nothing
	if got := cp.drain(r1, src); !slices.Equal(got, []string{vm}) {
		t.Fatalf("the leader's drain of %s started %v, want %s", src, got, vm)
	}
	cp.midway(vm)
	n1.Crash()
	cp.kill(r1)
	killed := time.Now()
	var takeover time.Duration
	for time.Since(killed) < 30*time.Second {
		r2.c.Step(context.Background()) // adopts what etcd records once it leads
		if slices.Contains(r2.c.InFlight(), vm) || len(cp.endsOn(log2, vm, 0)) > 0 {
			takeover = time.Since(killed)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r2.c.Wait()
	if r2.calls != 0 {
		cp.dups += r2.calls
		t.Errorf("DUPLICATE: the new leader called migrate %d times; it must adopt", r2.calls)
	}
	if takeover == 0 || takeover > 15*time.Second {
		t.Errorf("takeover after %v, want within 15 s", takeover)
	}
	ends2 := cp.endsOn(log2, vm, 0)
	if open, _ := log2.InFlight(); len(open) > 0 {
		cp.unfinished += len(open)
		t.Errorf("UNFINISHED: the new leader's log has open records %+v", open)
	}
	n2.Close()
	cp.done(r2)
	// r1 restarts on its log, alone, and settles its open record.
	y := cp.newCtl(controller.Auto, "")
	cp.done(y)
	cp.check("leader-lost", fmt.Sprintf("%s->%s, leader r1 killed mid-move: r2 adopted it after %.1fs (lease %v), its log %s, %d migrate call(s) from r2; r1 restarted, its log %s",
		src, dst, takeover.Seconds(), leaseTTL, summary(ends2), r2.calls, summary(cp.endsSince(vm, seq))), t0)
}

func (cp *campaign) newHA(join func(string, *store.Log) (*ctl, *ha.Node), name string, log *store.Log) (*ctl, *ha.Node) {
	return join(name, log)
}

// endsOn are vm's migration ends and reconciliations in log after seq.
func (cp *campaign) endsOn(log *store.Log, vm string, seq uint64) []store.Event {
	var out []store.Event
	for _, e := range list(cp.t, log, store.Filter{VM: vm}) {
		if e.Seq > seq && (e.Kind == store.MigrationEnd || e.Kind == store.Reconciled) && e.State != "" {
			out = append(out, e)
		}
	}
	return out
}
