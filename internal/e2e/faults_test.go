package e2e

// Faults injected into the lab's hosts and into the controller itself: a
// libvirtd stopped (SIGSTOP), a migration target's libvirtd killed mid-move and
// restarted, and the controller killed mid-move and started again on the same
// event log. One test, one pair of guests, the scenarios in turn.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// restless moves a guest off a host past 8% of its capacity, with a short
// cool-down so that a guest can move again within the test. With faultDriver's
// capacities host0 (one core) is overloaded by the two guests (each a tenth of a
// core or more under TCG) and the others (ten cores) by neither.
const restless = `
horizon: 6s
overload: {threshold: 0.08, probability: 0.5}
underload: {enabled: false}
lead_time: {margin: 10s}
anti_thrash: {cooldown: 1s, max_per_cycle: 4}
`

// daemon is one lab host's libvirtd, to stop, kill and start again.
type daemon struct {
	t *testing.T
	l *lab.Lab
	h lab.Host
}

func (d daemon) pid() int {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.h.Dir, "libvirtd.pid"))
	if err != nil {
		d.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		d.t.Fatal(err)
	}
	return pid
}

func (d daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := syscall.Kill(d.pid(), sig); err != nil {
		d.t.Fatalf("%s libvirtd: %v: %v", d.h.ID, sig, err)
	}
}

// kill SIGKILLs the daemon and waits until it is gone. Its guests' QEMUs and
// virtlogd live on, as they would on a real host.
func (d daemon) kill() {
	d.t.Helper()
	pid := d.pid()
	d.signal(syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs libvirtd again in the host's namespaces (entered through its
// virtlogd, which outlives it) and waits until it answers.
func (d daemon) start() {
	d.t.Helper()
	out, err := exec.Command("ip", "netns", "pids", d.h.NetNS).Output()
	if err != nil {
		d.t.Fatal(err)
	}
	logd := ""
	for _, p := range strings.Fields(string(out)) {
		if comm, _ := os.ReadFile("/proc/" + p + "/comm"); strings.TrimSpace(string(comm)) == "virtlogd" {
			logd = p
		}
	}
	if logd == "" {
		d.t.Fatalf("%s: no virtlogd to enter the namespaces through", d.h.ID)
	}
	script := `rm -f /run/libvirtd.pid
libvirtd -d --listen </dev/null >/dev/null 2>&1
for i in $(seq 100); do [ -s /run/libvirtd.pid ] && break; sleep 0.05; done
cat /run/libvirtd.pid > "$D/libvirtd.pid"`
	cmd := exec.Command("nsenter", "-t", logd, "-m", "-u", "-n", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "D="+d.h.Dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		d.t.Fatalf("%s: restarting libvirtd: %v: %s", d.h.ID, err, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		nc, err := d.l.Dial(ctx, "tcp", net.JoinHostPort(d.h.Addr, fmt.Sprint(lab.LibvirtPort)))
		cancel()
		if err == nil {
			c := lv.NewWithDialer(dialers.NewAlreadyConnected(nc))
			if err = c.ConnectToURI(lv.QEMUSystem); err == nil {
				_, err = c.ConnectGetLibVersion()
				c.Disconnect()
			}
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: libvirtd did not answer after its restart: %v", d.h.ID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killable dials the lab and can drop every connection it made at once and
// refuse new ones: what the kernel does to a process killed with SIGKILL.
type killable struct {
	l *lab.Lab

	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (k *killable) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	k.mu.Lock()
	dead := k.dead
	k.mu.Unlock()
	if dead {
		return nil, fmt.Errorf("dial %s: the process is dead", addr)
	}
	c, err := k.l.Dial(ctx, network, addr)
	if err == nil {
		k.mu.Lock()
		k.conns = append(k.conns, c)
		k.mu.Unlock()
	}
	return c, err
}

func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = true
	for _, c := range k.conns {
		c.Close()
	}
}

// faultDriver connects to the lab through dial; host0 is given one core, the
// others ten cores each (see restless).
func faultDriver(t *testing.T, l *lab.Lab, dial func(context.Context, string, string) (net.Conn, error)) *libvirt.Driver {
	t.Helper()
	mhz := coreMHz(t, l)
	var hosts []libvirt.HostConfig
	for _, h := range l.Hosts {
		cpu := 10 * mhz
		if h.Index == 0 {
			cpu = mhz
		}
		hosts = append(hosts, libvirt.HostConfig{ID: h.ID, URI: h.URI(), MigrateURI: h.MigrateURI(),
			Capacity: model.Resources{CPU: cpu, Mem: 4096}, Cores: max(1, int(cpu/mhz))})
	}
	d, err := libvirt.New(libvirt.Config{Hosts: hosts, Dial: dial, DialTimeout: 2 * time.Second, PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// stepUntil runs cycles, gap apart, until ok says the cycle did what is wanted,
// at most n of them; it returns the cycles run.
func stepUntil(t *testing.T, c *controller.Controller, n int, gap time.Duration, ok func(controller.Cycle) bool) (int, bool) {
	t.Helper()
	for i := 1; i <= n; i++ {
		cy, err := c.Step(context.Background())
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if ok(cy) {
			return i, true
		}
		time.Sleep(gap)
	}
	return n, false
}

// waitTimeout waits for the controller's migrations, failing past d.
func waitTimeout(t *testing.T, c *controller.Controller, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("migrations still running after %v: %v", d, c.InFlight())
	}
}

func endsOf(t *testing.T, log *store.Log, vm string) []store.Event {
	return list(t, log, store.Filter{VM: vm, Kind: store.MigrationEnd})
}

// TestHostFaults: three faults against the lab, one after another.
//
//   - hung: host2's libvirtd stopped (SIGSTOP). A cycle's reads of the other
//     hosts end by the collection deadline, with their guests; host2 is logged
//     as silent; the next cycle costs no more.
//   - target dies: host0's guest moves, and its target's libvirtd is killed
//     mid-move. The guest keeps running on host0; the migration ends failed
//     with libvirt's error and no downtime; within two cycles the guest moves to
//     the third host; once the dead host's libvirtd is back, a move goes to it.
//   - controller killed: a second guest moves, and the controller dies (every
//     connection dropped, nothing more logged). A new controller on the same
//     event log adopts the migration libvirt still runs, records its real end,
//     and starts no second migration of the guest.
func TestHostFaults(t *testing.T) {
	l := lab.Shared(t)
	// The movers: 128 MiB at 12 MiB/s is about 11 s a move.
	boot(t, l, 0, small("fault-a"), small("fault-b"))
	for i := range l.Hosts {
		d := daemon{t, l, l.Hosts[i]}
		t.Cleanup(func() {
			syscall.Kill(d.pid(), syscall.SIGCONT)
			if syscall.Kill(d.pid(), 0) != nil {
				d.start()
			}
		})
	}
	policy := writePolicy(t, restless)

	t.Run("hung", func(t *testing.T) {
		drv := faultDriver(t, l, l.Dial)
		const deadline = 3 * time.Second
		c, log := newController(t, l, drv, controller.Config{Interval: 2 * time.Second, Mode: controller.DryRun,
			Policy: policy, CollectTimeout: deadline})
		if _, err := c.Step(context.Background()); err != nil { // connected and warm
			t.Fatal(err)
		}
		hung := daemon{t, l, l.Hosts[2]}
		hung.signal(syscall.SIGSTOP)
		defer hung.signal(syscall.SIGCONT)
		for i := range 2 {
			t0 := time.Now()
			cy, err := c.Step(context.Background())
			took := time.Since(t0)
			if err != nil {
				t.Fatal(err)
			}
			var hosts []string
			for _, h := range cy.Snapshot.Hosts {
				hosts = append(hosts, h.ID)
			}
			var guests []string
			for _, v := range cy.Snapshot.VMs {
				guests = append(guests, v.ID)
			}
			t.Logf("cycle %d with host2 stopped: %v, hosts %v, guests %v", i, took.Round(time.Millisecond), hosts, guests)
			if took > deadline+2*time.Second {
				t.Errorf("cycle %d took %v with a %v collection deadline", i, took, deadline)
			}
			if !slices.Equal(hosts, []string{"host0", "host1"}) || !slices.Contains(guests, "fault-a") || !slices.Contains(guests, "fault-b") {
				t.Errorf("cycle %d: hosts %v, guests %v: want host0 and host1 with the guests", i, hosts, guests)
			}
		}
		var silent []store.Event
		for _, e := range list(t, log, store.Filter{Kind: store.Failure}) {
			if e.Host == "host2" && strings.Contains(e.Message, "collection deadline") {
				silent = append(silent, e)
			}
		}
		if len(silent) < 2 {
			dump(t, log)
			t.Errorf("%d failures name host2's silence, want one a cycle", len(silent))
		} else {
			t.Logf("host2: %s (%s)", silent[0].Error, silent[0].Message)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("target dies", func(t *testing.T) {
		drv := faultDriver(t, l, l.Dial)
		// fault-a may not stay on host0 and fault-b may not leave it: the
		// moves are fault-a's; once the dead host is back, draining the third
		// has it as fault-a's only target.
		rules := []model.Rule{
			{Name: "off-host0", Kind: model.HostAntiAffinity, Must: true, VMs: []string{"fault-a"}, Hosts: []string{"host0"}},
			{Name: "stay", Kind: model.HostAffinity, Must: true, VMs: []string{"fault-b"}, Hosts: []string{"host0"}},
		}
		c, log := newController(t, l, drv, controller.Config{Interval: 2 * time.Second, Mode: controller.Auto,
			Policy: policy, Rules: rules, MaxBandwidthMiBps: 12, HostCooldown: 4 * time.Second})
		defer func() {
			if t.Failed() {
				dump(t, log)
			}
		}()
		started := func(cy controller.Cycle) bool { return slices.Contains(cy.Started, "fault-a") }
		if _, ok := stepUntil(t, c, 5, 2*time.Second, started); !ok {
			t.Fatal("fault-a did not start moving")
		}
		first := list(t, log, store.Filter{VM: "fault-a", Kind: store.MigrationStart})[0]
		dead := daemon{t, l, l.Hosts[hostIndex(t, l, first.Target)]}
		other := "host1"
		if first.Target == "host1" {
			other = "host2"
		}
		time.Sleep(3 * time.Second) // data flows
		dead.kill()
		t0 := time.Now()
		waitTimeout(t, c, 90*time.Second)
		end := endsOf(t, log, "fault-a")[0]
		t.Logf("%s's libvirtd killed mid-move; the move ended %s after %v: %s", first.Target, end.State, time.Since(t0).Round(time.Millisecond), end.Error)
		if end.State != store.StateFailed || end.Error == "" || end.DowntimeMs != 0 {
			t.Errorf("end %+v: want failed, with libvirt's error and no downtime", end)
		}
		if loc := locate(t, drv, "fault-a"); loc.Host != "host0" || loc.States["host0"] != hypervisor.StateRunning {
			t.Fatalf("fault-a after the failed move: %+v, want running on host0", loc)
		}
		if _, err := l.WaitProgress(context.Background(), 0, "fault-a", 1, 30*time.Second); err != nil {
			t.Fatalf("fault-a stalled on host0: %v", err)
		}

		n, ok := stepUntil(t, c, 2, 2*time.Second, started)
		if !ok {
			t.Fatalf("fault-a did not move again within 2 cycles")
		}
		again := list(t, log, store.Filter{VM: "fault-a", Kind: store.MigrationStart})
		if tgt := again[len(again)-1].Target; tgt != other {
			t.Fatalf("fault-a's next move went to %s, want %s (the dead host is %s)", tgt, other, first.Target)
		}
		t.Logf("fault-a moves to %s at cycle %d after the failure", other, n)
		for _, e := range list(t, log, store.Filter{Kind: store.Decision}) {
			if e.Seq > end.Seq && e.Target == first.Target {
				t.Errorf("a move was planned onto the dead %s: %+v", first.Target, e)
			}
		}
		waitTimeout(t, c, 90*time.Second)
		if e := endsOf(t, log, "fault-a"); e[len(e)-1].State != store.StateCompleted {
			t.Fatalf("fault-a's move to %s: %+v", other, e[len(e)-1])
		}

		dead.start()
		t.Logf("%s's libvirtd is back", first.Target)
		back := func(cy controller.Cycle) bool {
			return slices.ContainsFunc(cy.Snapshot.Hosts, func(h model.Host) bool { return h.ID == first.Target })
		}
		if _, ok := stepUntil(t, c, 5, 2*time.Second, back); !ok {
			t.Fatalf("%s is not back in the cycles' view", first.Target)
		}
		time.Sleep(4 * time.Second) // its cool-down (host_cooldown) after the failed move
		plan, err := c.Drain(context.Background(), other)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Moves) != 1 || plan.Moves[0].TargetHostID != first.Target {
			t.Fatalf("draining %s: %+v, want fault-a to the revived %s", other, plan, first.Target)
		}
		last := list(t, log, store.Filter{VM: "fault-a", Kind: store.MigrationStart})
		if tgt := last[len(last)-1].Target; tgt != first.Target {
			t.Fatalf("fault-a moved to %s, want the revived %s", tgt, first.Target)
		}
		waitTimeout(t, c, 90*time.Second)
		if e := endsOf(t, log, "fault-a"); e[len(e)-1].State != store.StateCompleted {
			t.Fatalf("fault-a's move to the revived %s: %+v", first.Target, e[len(e)-1])
		}
		if loc := locate(t, drv, "fault-a"); loc.Host != first.Target {
			t.Errorf("fault-a: %+v, want on %s", loc, first.Target)
		}
		var states []string
		for _, e := range list(t, log, store.Filter{Kind: store.HostState}) {
			if e.Host == first.Target {
				states = append(states, e.State)
			}
		}
		if !slices.Contains(states, "aside") || !slices.Contains(states, "down") || !slices.Contains(states, "up") {
			t.Errorf("%s's state changes %v: want aside (the move's connection failed), down, then up", first.Target, states)
		}
		t.Logf("%s: %v", first.Target, states)
	})
	if t.Failed() {
		return
	}

	t.Run("controller killed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.db")
		where := locate(t, faultDriver(t, l, l.Dial), "fault-a").Host
		// fault-a stays where it is; fault-b moves.
		cfg := controller.Config{Interval: 2 * time.Second, Mode: controller.Auto, Policy: policy, MaxBandwidthMiBps: 12,
			EventLog: path, Rules: []model.Rule{{Name: "stay", Kind: model.HostAffinity, Must: true, VMs: []string{"fault-a"}, Hosts: []string{where}}}}
		for _, h := range l.Hosts {
			cfg.Hosts = append(cfg.Hosts, controller.HostConfig{ID: h.ID, URI: h.URI()})
		}
		k := &killable{l: l}
		log1, err := store.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		first, err := controller.New(cfg, faultDriver(t, l, k.Dial), log1)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := stepUntil(t, first, 5, 2*time.Second, func(cy controller.Cycle) bool { return slices.Contains(cy.Started, "fault-b") }); !ok {
			log1.Close()
			t.Fatal("fault-b did not start moving")
		}
		time.Sleep(3 * time.Second)
		// SIGKILL: the log stops where it is and every connection drops.
		log1.Close()
		k.kill()
		t.Log("controller killed mid-move")

		log := openLogT(t, path)
		defer func() {
			if t.Failed() {
				dump(t, log)
			}
		}()
		drv := faultDriver(t, l, l.Dial)
		second, err := controller.New(cfg, drv, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(second.Wait)
		if err := second.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := second.InFlight(); !slices.Equal(got, []string{"fault-b"}) {
			t.Errorf("after the restart in flight: %v, want fault-b adopted", got)
		}
		// Cycles while the adopted job runs start nothing more of fault-b.
		for range 2 {
			cy, err := second.Step(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(cy.Started, "fault-b") {
				t.Errorf("the new controller started fault-b again")
			}
			time.Sleep(2 * time.Second)
		}
		waitTimeout(t, second, 90*time.Second)
		start := list(t, log, store.Filter{VM: "fault-b", Kind: store.MigrationStart})
		var final store.Event
		for _, e := range list(t, log, store.Filter{VM: "fault-b"}) {
			if (e.Kind == store.MigrationEnd || e.Kind == store.Reconciled) && store.Settled(e.State) {
				final = e
			}
		}
		loc := locate(t, drv, "fault-b")
		t.Logf("adopted fault-b's move %s -> %s: %s; libvirt has it on %s", start[0].Source, start[0].Target, final.State, loc.Host)
		if len(start) != 1 {
			t.Errorf("%d migration starts of fault-b, want 1", len(start))
		}
		want := store.StateFailed
		if loc.Host == start[0].Target {
			want = store.StateCompleted
		}
		if final.State != want || loc.Host == "" {
			t.Errorf("the log's final state %q for fault-b, which libvirt has on %q: want %s", final.State, loc.Host, want)
		}
		if open, _ := log.InFlight(); len(open) != 0 {
			t.Errorf("open records after the adopted move ended: %+v", open)
		}
	})
}

func openLogT(t *testing.T, path string) *store.Log {
	t.Helper()
	log, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return log
}
