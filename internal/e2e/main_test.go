package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// One lab of three hosts for the whole package: making one costs seconds, and the
// tests tidy their guests away so the next starts from empty hosts.
func TestMain(m *testing.M) { os.Exit(lab.RunShared(m, 3)) }

// coreMHz is one core of this machine in the driver's units, as host0 reports it.
func coreMHz(t *testing.T, l *lab.Lab) float64 {
	t.Helper()
	d := newDriver(t, l, 0)
	hs, err := d.Hosts(context.Background())
	if err != nil || hs[0].PEMIPS <= 0 {
		t.Fatalf("host0: %+v %v", hs, err)
	}
	return hs[0].PEMIPS
}

// newDriver connects to the lab's hosts from the lab namespace. cpu > 0 gives each
// host that total CPU capacity (cores x MHz: a share of this machine, whose cores
// keep their clock, so a 1-vCPU guest may use up to a core of it) and a network
// the policies can price migrations by; extra hosts are appended as given.
func newDriver(t *testing.T, l *lab.Lab, cpu float64, extra ...libvirt.HostConfig) hypervisor.Driver {
	t.Helper()
	var hosts []libvirt.HostConfig
	for _, h := range l.Hosts {
		hc := libvirt.HostConfig{ID: h.ID, URI: h.URI(), MigrateURI: h.MigrateURI()}
		if cpu > 0 {
			hc.Capacity = model.Resources{CPU: cpu, Mem: 4096, Net: 30000} // KB/s: the policies price a move by it
		}
		hosts = append(hosts, hc)
	}
	hosts = append(hosts, extra...)
	d, err := libvirt.New(libvirt.Config{Hosts: hosts, Dial: l.Dial, DialTimeout: 2 * time.Second, PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// writePolicy writes a headroom policy file and returns its policy name.
func writePolicy(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return "headroom:" + p
}

// eager is a headroom policy that calls any host with a running guest overloaded
// (threshold 1% of capacity), so that tests of the loop's plumbing get decisions
// without loading the machine. Placement would by default fill no host past that
// trigger, so placement.fill lets it place as a normal policy does.
const eager = `
horizon: 6s
overload: {threshold: 0.01, probability: 0.5}
placement: {fill: {cpu: 0.9, mem: 0.9, net: 0.9, disk: 0.9}}
underload: {enabled: false}
lead_time: {margin: 10s}
anti_thrash: {cooldown: 10m, max_per_cycle: 4}
`

// newController opens an event log in a temporary directory and builds a
// controller over drv; cfg.Hosts defaults to the lab's hosts.
func newController(t *testing.T, l *lab.Lab, drv hypervisor.Driver, cfg controller.Config) (*controller.Controller, *store.Log) {
	t.Helper()
	if len(cfg.Hosts) == 0 {
		for _, h := range l.Hosts {
			cfg.Hosts = append(cfg.Hosts, controller.HostConfig{ID: h.ID, URI: h.URI()})
		}
	}
	if cfg.MigrationTimeout == 0 {
		cfg.MigrationTimeout = 3 * time.Minute
	}
	cfg.EventLog = filepath.Join(t.TempDir(), "events.db")
	log, err := store.Open(cfg.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	c, err := controller.New(cfg, drv, log)
	if err != nil {
		log.Close()
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: migrations end before the log closes.
	t.Cleanup(func() { log.Close() })
	t.Cleanup(c.Wait)
	return c, log
}

// boot starts guests on a host at once and waits until each prints progress; they
// are destroyed when the test ends, since every idle TCG guest costs CPU.
func boot(t *testing.T, l *lab.Lab, host int, specs ...lab.VMSpec) {
	t.Helper()
	bootOn(t, l, func(int) int { return host }, specs...)
}

// bootOn starts guest i on host hostOf(i), all at once, and waits as boot does.
func bootOn(t *testing.T, l *lab.Lab, hostOf func(int) int, specs ...lab.VMSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		t.Cleanup(func() {
			if err := l.DestroyVM(context.Background(), s.Name); err != nil && !strings.Contains(err.Error(), "no guest") {
				t.Logf("destroy %s: %v", s.Name, err)
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.StartVM(ctx, hostOf(i), s); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = l.WaitProgress(ctx, hostOf(i), s.Name, 2, 150*time.Second)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("booted %d guests in %v", len(specs), time.Since(t0).Round(100*time.Millisecond))
}

// small is a light guest: little CPU and a small dirtied buffer, so it moves fast.
func small(name string) lab.VMSpec {
	return lab.VMSpec{Name: name, Args: "headroom.cpu=0.05 headroom.dirty_mib=4 headroom.dirty_rate=2"}
}

func hostIndex(t *testing.T, l *lab.Lab, id string) int {
	t.Helper()
	for _, h := range l.Hosts {
		if h.ID == id {
			return h.Index
		}
	}
	t.Fatalf("no lab host %q", id)
	return -1
}

// locate asks every host where vm runs.
func locate(t *testing.T, d hypervisor.Driver, vm string) hypervisor.Location {
	t.Helper()
	loc, err := d.Locate(context.Background(), vm)
	if err != nil {
		t.Fatalf("locate %s: %v", vm, err)
	}
	return loc
}

func list(t *testing.T, log *store.Log, f store.Filter) []store.Event {
	t.Helper()
	es, err := log.List(f)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// dump logs the event log, for reading a failure.
func dump(t *testing.T, log *store.Log) {
	t.Helper()
	for _, e := range list(t, log, store.Filter{}) {
		s := fmt.Sprintf("#%d %s %s vm=%s %s->%s host=%s state=%s", e.Seq, e.Time.Format("15:04:05.0"), e.Kind, e.VM, e.Source, e.Target, e.Host, e.State)
		if e.Seconds > 0 {
			s += fmt.Sprintf(" %.1fs downtime=%.0fms data=%.0fMiB", e.Seconds, e.DowntimeMs, e.DataMiB)
		}
		if e.Reason != nil {
			s += " reason=" + e.Reason.Rule + ": " + e.Reason.Detail
		}
		if e.Message != "" {
			s += " msg=" + e.Message
		}
		if e.Error != "" {
			s += " error=" + e.Error
		}
		t.Log(s)
	}
}

// statusOf is every host's domains and states, as libvirt reports them.
func statusOf(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var sb strings.Builder
	for _, hs := range l.Status(context.Background()) {
		if hs.Err != "" {
			t.Fatalf("%s: %s", hs.Host.ID, hs.Err)
		}
		var ds []string
		for _, d := range hs.Domains {
			ds = append(ds, d.Name+"="+d.State)
		}
		sort.Strings(ds) // libvirt lists in no promised order
		fmt.Fprintf(&sb, "%s: %s\n", hs.Host.ID, strings.Join(ds, " "))
	}
	return sb.String()
}
