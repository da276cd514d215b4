package libvirt

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
)

func idleHost(vm string) *fakeHost {
	return &fakeHost{cpus: 2, mhz: 2000, stats: func() ([]fakeDom, time.Duration) {
		return []fakeDom{{name: vm, id: 1, params: domStats(1, time.Second, 1)}}, 0
	}}
}

// TestHostsNoticesADeadLibvirtd: a host's node info is kept from its first
// answer, so a host whose libvirtd died since must still be asked, or it stays
// listed as up and the controller keeps planning moves onto it.
func TestHostsNoticesADeadLibvirtd(t *testing.T) {
	hosts := map[string]*fakeHost{"a": idleHost("va"), "b": idleHost("vb")}
	d := fakeDriver(t, hosts, "a", "b")
	ctx := context.Background()
	if hs, err := d.Hosts(ctx); err != nil || hs[1].Err != "" {
		t.Fatalf("both up: %+v %v", hs, err)
	}
	hosts["b"].kill()
	hs, err := d.Hosts(ctx)
	if hs[1].Err == "" || !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("after b's libvirtd died: %+v, %v; want b listed with its error", hs, err)
	}
	if hs[0].Err != "" {
		t.Errorf("a: %s", hs[0].Err)
	}
}

// TestHungHostCostsTheDeadlineOnce: a libvirtd that holds every request (as
// SIGSTOP does) delays a stats call only to its caller's deadline, with the
// other hosts answered; and Locate, which a migration calls, does not wait on it
// again until it has answered a cluster read.
func TestHungHostCostsTheDeadlineOnce(t *testing.T) {
	hosts := map[string]*fakeHost{"a": idleHost("va"), "b": idleHost("vb"), "c": idleHost("vc")}
	d := fakeDriver(t, hosts, "a", "b", "c")
	if _, err := d.Stats(context.Background()); err != nil {
		t.Fatal(err)
	}
	hosts["c"].freeze()
	defer hosts["c"].thaw()

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	t0 := time.Now()
	st, err := d.Stats(ctx)
	took := time.Since(t0)
	cancel()
	if took > deadline+time.Second {
		t.Errorf("stats took %v with a %v deadline", took, deadline)
	}
	var he *hypervisor.HostError
	if !errors.As(err, &he) || he.Host != "c" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stats error %v: want host c's deadline", err)
	}
	got := map[string]bool{}
	for _, v := range st.VMs {
		got[v.VM] = true
	}
	if !got["va"] || !got["vb"] || got["vc"] {
		t.Errorf("stats of %v: want va and vb, from the hosts that answered", got)
	}

	t0 = time.Now()
	loc, err := d.Locate(context.Background(), "va")
	if took := time.Since(t0); took > time.Second || err != nil || loc.Host != "a" || len(loc.Unreachable) != 1 || loc.Unreachable[0] != "c" {
		t.Errorf("locate after c went silent: %+v, %v in %v; want a at once, c not asked", loc, err, took)
	}

	hosts["c"].thaw()
	if _, err := d.Hosts(context.Background()); err != nil {
		t.Fatalf("c thawed: %v", err)
	}
	if loc, err := d.Locate(context.Background(), "vc"); err != nil || loc.Host != "c" {
		t.Errorf("locate once c answered again: %+v %v", loc, err)
	}
}

// TestTimedOutCallForgetsItsClient: a call that times out closes its
// connection, and go-libvirt only notices later (its socket answers EINVAL while
// IsConnected still says true). The host must drop that client at once, so the
// next call dials afresh instead of failing with "invalid argument".
func TestTimedOutCallForgetsItsClient(t *testing.T) {
	hosts := map[string]*fakeHost{"a": idleHost("va")}
	d := fakeDriver(t, hosts, "a")
	if _, err := d.Hosts(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := d.hosts[0]
	hosts["a"].freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := d.Hosts(ctx)
	cancel()
	hosts["a"].thaw()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("frozen host: %v, want its deadline", err)
	}
	h.mu.Lock()
	kept := h.conn != nil
	h.mu.Unlock()
	if kept {
		t.Error("the timed-out client is still the host's: the next call may use a dead connection")
	}
	for i := range 20 {
		if _, err := d.Hosts(context.Background()); err != nil {
			t.Fatalf("call %d after the timeout: %v", i, err)
		}
	}
}
