package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
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

// TestUnreachableHost: a configured host whose libvirtd does not answer (an
// address in the lab's namespace where nothing listens) is logged as a failure
// naming it, every cycle, while the same cycles read and serve the other hosts: the
// overloaded guest on host0 still moves.
func TestUnreachableHost(t *testing.T) {
	l := lab.Shared(t)
	boot(t, l, 0, small("unr-a"))
	dead := libvirt.HostConfig{ID: "host3", URI: fmt.Sprintf("qemu+tcp://%s.254/system", lab.Subnet)}
	drv := newDriver(t, l, 0, dead)
	var hosts []controller.HostConfig
	for _, h := range l.Hosts {
		hosts = append(hosts, controller.HostConfig{ID: h.ID, URI: h.URI()})
	}
	hosts = append(hosts, controller.HostConfig{ID: dead.ID, URI: dead.URI})
	c, log := newController(t, l, drv, controller.Config{
		Interval: 2 * time.Second, Mode: controller.Auto, Policy: writePolicy(t, eager), Hosts: hosts,
	})
	defer func() {
		if t.Failed() {
			dump(t, log)
		}
	}()
	cycles := steps(t, c, 2, 2*time.Second)
	c.Wait()

	last := cycles[len(cycles)-1]
	if !slices.Contains(last.Started, "unr-a") {
		t.Fatalf("the cycle with host3 down started %v, want unr-a moved off host0", last.Started)
	}
	for _, h := range last.Snapshot.Hosts {
		if h.ID == dead.ID {
			t.Errorf("host3 is in the snapshot: %+v", h)
		}
	}
	var fails []store.Event
	for _, e := range list(t, log, store.Filter{Kind: store.Failure}) {
		if e.Host == dead.ID && strings.Contains(e.Error, "connection refused") {
			fails = append(fails, e)
		}
	}
	if len(fails) < len(cycles) {
		t.Errorf("%d failures name host3 with its reason over %d cycles", len(fails), len(cycles))
	}
	for _, e := range list(t, log, store.Filter{Kind: store.Decision}) {
		if e.Target == dead.ID {
			t.Errorf("a move was planned onto the unreachable host: %+v", e)
		}
	}
	// The move is verified by its source and target; host3's silence does not make
	// it a failure.
	ends := list(t, log, store.Filter{VM: "unr-a", Kind: store.MigrationEnd})
	if len(ends) != 1 || ends[0].State != string(hypervisor.PhaseCompleted) || ends[0].Error != "" || !strings.Contains(ends[0].Message, "host3") {
		t.Fatalf("unr-a: migration ends %+v", ends)
	}
	if loc := locate(t, newDriver(t, l, 0), "unr-a"); loc.Host != ends[0].Target {
		t.Errorf("unr-a: %+v, want on %s", loc, ends[0].Target)
	}
	t.Logf("host3: %s (%s); unr-a moved %s -> %s in the same cycle", fails[0].Error, fails[0].Message, ends[0].Source, ends[0].Target)
}

// vanishing destroys chosen guests through the lab around the driver's Migrate:
// before it (the guest is gone when the move starts) or just after (it goes
// during the move).
type vanishing struct {
	hypervisor.Driver
	l             *lab.Lab
	before, after string

	mu   sync.Mutex
	done map[string]bool
}

func (d *vanishing) Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (hypervisor.Migration, error) {
	d.mu.Lock()
	first := !d.done[vm]
	d.done[vm] = true
	d.mu.Unlock()
	if first && vm == d.before {
		if err := d.l.DestroyVM(ctx, vm); err != nil {
			return nil, fmt.Errorf("test: destroying %s: %w", vm, err)
		}
	}
	m, err := d.Driver.Migrate(ctx, vm, target, opts)
	if first && err == nil && vm == d.after {
		if err := d.l.DestroyVM(ctx, vm); err != nil {
			return nil, fmt.Errorf("test: destroying %s: %w", vm, err)
		}
	}
	return m, err
}

// TestVanishingVM: one guest disappears between the decision and its migration,
// another while it migrates. Each is logged with the reason, and the same cycle
// still moves a third guest; the next cycle runs clean without them.
func TestVanishingVM(t *testing.T) {
	l := lab.Shared(t)
	boot(t, l, 0, small("van-before"), small("van-during"), small("van-ok"))
	drv := &vanishing{Driver: newDriver(t, l, 0), l: l, before: "van-before", after: "van-during", done: map[string]bool{}}
	c, log := newController(t, l, drv, controller.Config{
		Interval: 2 * time.Second, Mode: controller.Auto, Policy: writePolicy(t, eager),
		MaxConcurrent: 3, MaxPerHost: 3,
	})
	defer func() {
		if t.Failed() {
			dump(t, log)
		}
	}()
	cycles := steps(t, c, 2, 2*time.Second)
	c.Wait()
	if got := cycles[1].Started; !slices.Contains(got, "van-ok") {
		t.Fatalf("the cycle started %v, want van-ok among them", got)
	}

	// Gone before: the move is refused with the reason, which ends its start
	// record (logged before libvirt is asked).
	var before *store.Event
	for _, e := range list(t, log, store.Filter{VM: "van-before", Kind: store.MigrationEnd}) {
		if e.Message == "migration refused" {
			before = &e
		}
	}
	if before == nil || !strings.Contains(before.Error, "not found") || before.Source != "host0" {
		t.Errorf("van-before: failure %+v, want one saying it was not found", before)
	}
	// Gone during: the migration ends failed, with libvirt's reason.
	during := list(t, log, store.Filter{VM: "van-during", Kind: store.MigrationEnd})
	if len(during) != 1 || during[0].State == string(hypervisor.PhaseCompleted) || during[0].Error == "" {
		t.Errorf("van-during: migration ends %+v, want one failed with a reason", during)
	}
	ok := list(t, log, store.Filter{VM: "van-ok", Kind: store.MigrationEnd})
	if len(ok) != 1 || ok[0].State != string(hypervisor.PhaseCompleted) {
		t.Errorf("van-ok: migration ends %+v", ok)
	}
	if loc := locate(t, drv, "van-ok"); len(ok) == 1 && loc.Host != ok[0].Target {
		t.Errorf("van-ok: %+v, want on %s", loc, ok[0].Target)
	}

	// The next cycle sees only what exists. (The eager policy may move van-ok
	// on: its new host is "overloaded" by it too.)
	next := steps(t, c, 1, 0)[0]
	c.Wait()
	for _, v := range next.Snapshot.VMs {
		if v.ID == "van-before" || v.ID == "van-during" {
			t.Errorf("vanished %s still in the snapshot", v.ID)
		}
	}
	if before != nil && len(during) == 1 {
		t.Logf("vanished before the move: %s; during it: %s (%s)", before.Error, during[0].Error, during[0].State)
	}
}

// define puts an inactive definition of a guest called name on host, as a stale
// leftover would be, and returns a function that removes it.
func define(t *testing.T, l *lab.Lab, host int, name string) (undefine func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := l.Dial(ctx, "tcp", net.JoinHostPort(l.Hosts[host].Addr, fmt.Sprint(lab.LibvirtPort)))
	if err != nil {
		t.Fatal(err)
	}
	c := lv.NewWithDialer(dialers.NewAlreadyConnected(nc))
	if err := c.ConnectToURI(lv.QEMUSystem); err != nil {
		t.Fatal(err)
	}
	// The XML has no UUID, so libvirt makes a new one: a different domain of the
	// same name.
	dom, err := c.DomainDefineXML(l.DomainXML(lab.VMSpec{Name: name}))
	if err != nil {
		c.Disconnect()
		t.Fatal(err)
	}
	var once sync.Once
	undefine = func() {
		once.Do(func() {
			if err := c.DomainUndefine(dom); err != nil {
				t.Errorf("undefine stale %s: %v", name, err)
			}
			c.Disconnect()
		})
	}
	t.Cleanup(undefine)
	return undefine
}

// TestRefusedMigration: the only allowed target holds a stale definition of the
// guest under another UUID, so libvirt refuses the migration. The failure is logged
// with libvirt's reason, the guest keeps running where it was, and once the stale
// definition is gone the next cycle moves it.
func TestRefusedMigration(t *testing.T) {
	l := lab.Shared(t)
	boot(t, l, 0, small("ref-a"))
	undefine := define(t, l, 2, "ref-a")
	drv := newDriver(t, l, 0)
	// host1 is ruled out, so the move must go to host2.
	rule := model.Rule{Name: "not-host1", Kind: model.HostAntiAffinity, Must: true, VMs: []string{"ref-a"}, Hosts: []string{"host1"}}
	c, log := newController(t, l, drv, controller.Config{
		Interval: 2 * time.Second, Mode: controller.Auto, Policy: writePolicy(t, eager), Rules: []model.Rule{rule},
	})
	defer func() {
		if t.Failed() {
			dump(t, log)
		}
	}()
	cycles := steps(t, c, 2, 2*time.Second)
	c.Wait()
	if !slices.Contains(cycles[1].Started, "ref-a") && len(list(t, log, store.Filter{VM: "ref-a", Kind: store.Failure})) == 0 {
		t.Fatalf("ref-a was neither moved nor refused: %+v", cycles[1].Plan)
	}
	var refusal string
	for _, e := range list(t, log, store.Filter{VM: "ref-a"}) {
		if (e.Kind == store.Failure || e.Kind == store.MigrationEnd) && e.Error != "" && e.Target == "host2" {
			refusal = e.Kind + " " + e.State + ": " + e.Error
		}
		if e.Kind == store.MigrationEnd && e.State == string(hypervisor.PhaseCompleted) {
			t.Fatalf("migration onto a stale definition completed: %+v", e)
		}
	}
	if !strings.Contains(refusal, "already") {
		t.Fatalf("refusal %q: want libvirt's reason (the name is already defined)", refusal)
	}
	if loc := locate(t, drv, "ref-a"); loc.Host != "host0" || loc.States["host0"] != hypervisor.StateRunning {
		t.Fatalf("after the refusal ref-a: %+v, want running on host0", loc)
	}
	if _, err := l.WaitProgress(context.Background(), 0, "ref-a", 1, 30*time.Second); err != nil {
		t.Fatalf("ref-a stalled after the refused move: %v", err)
	}

	undefine()
	time.Sleep(2 * time.Second)
	retry := steps(t, c, 1, 0)[0]
	c.Wait()
	if !slices.Contains(retry.Started, "ref-a") {
		t.Fatalf("the next cycle started %v, want ref-a", retry.Started)
	}
	ends := list(t, log, store.Filter{VM: "ref-a", Kind: store.MigrationEnd})
	if e := ends[len(ends)-1]; e.State != string(hypervisor.PhaseCompleted) || e.Target != "host2" {
		t.Fatalf("retry: %+v", e)
	}
	if loc := locate(t, drv, "ref-a"); loc.Host != "host2" {
		t.Errorf("ref-a: %+v, want on host2", loc)
	}
	t.Logf("refused: %s; moved on the next cycle", refusal)
}
