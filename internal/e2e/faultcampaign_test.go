package e2e

// The fault campaign (issue #14): faults injected into the real-libvirt lab one
// after another, on one set of guests and one event log, with the invariants
// checked after each:
//
//   - every VM runs on exactly one host, as libvirt on every host says (lost);
//   - every migration has a final state in the log, and no VM moved without one
//     (unfinished);
//   - no must rule is broken (breaches);
//   - no VM is migrated twice at once: no second start while one is open in the
//     log, no migrate call while libvirt runs a job of the VM (duplicates);
//   - the hosts the fault is not about are still served: a cycle during the fault
//     reads them and their guests.
//
// The controller is "killed" in process: its event log is closed (nothing more
// is written, as after a SIGKILL; what it wrote was fsynced by each Append) and
// every connection it made is dropped and no new one is allowed (libvirtd sees
// the EOFs a dead process's sockets give). A new controller then opens the same
// log, as a restarted process does. See the README (the fault campaign) for why that is
// equivalent for the state machine.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/ha/etcdtest"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// calm plans no move on its own (no host is near its threshold with the
// capacities campaignDriver gives): every move of the campaign is a drain the
// test asks for, so each fault meets a migration it chose.
const calm = `
horizon: 6s
overload: {threshold: 0.95, probability: 0.5}
underload: {enabled: false}
lead_time: {margin: 10s}
anti_thrash: {cooldown: 1s, max_per_cycle: 4}
`

// The campaign's timings. A move is capped at moveMiBps (a 128 MiB guest takes
// ~8 s), which leaves seconds to inject a fault once data flows. stallTimeout
// is the controller's: a cut or starved link is aborted after it.
const (
	moveMiBps      = 16
	stallTimeout   = 10 * time.Second
	collectTimeout = 3 * time.Second
)

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

// watched is the controller's driver as the campaign sees it: every migrate
// call is checked against libvirt's running jobs (a duplicate if the VM already
// has one), hooks run before the call and when a job ends, and a host can be
// left out of the listing.
type watched struct {
	hypervisor.Driver
	cp        *campaign
	calls     *int // migrate calls that reached the driver
	onMigrate func(vm string) error
	onJobEnd  func(vm string)
	mu        sync.Mutex
	hidden    string
}

func (w *watched) hide(h string) { w.mu.Lock(); w.hidden = h; w.mu.Unlock() }
func (w *watched) gone() string  { w.mu.Lock(); defer w.mu.Unlock(); return w.hidden }

func (w *watched) Hosts(ctx context.Context) ([]hypervisor.Host, error) {
	hs, err := w.Driver.Hosts(ctx)
	g := w.gone()
	return slices.DeleteFunc(hs, func(h hypervisor.Host) bool { return h.ID == g }), err
}

func (w *watched) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vs, err := w.Driver.VMs(ctx)
	g := w.gone()
	return slices.DeleteFunc(vs, func(v hypervisor.VM) bool { return v.Host == g }), err
}

func (w *watched) Stats(ctx context.Context) (hypervisor.Stats, error) {
	s, err := w.Driver.Stats(ctx)
	g := w.gone()
	s.Hosts = slices.DeleteFunc(s.Hosts, func(h hypervisor.HostStats) bool { return h.Host == g })
	s.VMs = slices.DeleteFunc(s.VMs, func(v hypervisor.VMStats) bool { return v.Host == g })
	return s, err
}

func (w *watched) Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (hypervisor.Migration, error) {
	w.cp.beforeMigrate(vm)
	if w.onMigrate != nil {
		if err := w.onMigrate(vm); err != nil {
			return nil, err
		}
	}
	*w.calls++
	m, err := w.Driver.Migrate(ctx, vm, target, opts)
	if err != nil || w.onJobEnd == nil {
		return m, err
	}
	return &hooked{Migration: m, hook: func() { w.onJobEnd(vm) }}, nil
}

// hooked runs its hook when the controller first asks for the outcome of the
// ended job: after it recorded verifying, before it records the end.
type hooked struct {
	hypervisor.Migration
	once sync.Once
	hook func()
}

func (h *hooked) Wait(ctx context.Context) (hypervisor.Result, error) {
	h.once.Do(h.hook)
	return h.Migration.Wait(ctx)
}

// faultRow is one injected fault.
type faultRow struct {
	kind, outcome string
	took          time.Duration
}

// campaign is the lab, its guests, the one event log, and the tallies.
type campaign struct {
	t       *testing.T
	l       *lab.Lab
	policy  string
	logPath string
	log     *store.Log
	vms     []string
	static  []model.Rule
	mhz     float64

	where map[string]string // each VM's host at the last check
	seq   uint64            // events up to here were checked

	rows                             []faultRow
	lost, dups, breaches, unfinished int
	unserved                         int
	crashes                          int // libvirtds that died on their own
	logDups                          int
}

// locate asks every host where vm runs, on fresh connections (a restarted
// libvirtd drops the old ones).
func (cp *campaign) locate(vm string) hypervisor.Location {
	cp.t.Helper()
	d := cp.driver(cp.l.Dial)
	defer d.Close()
	return locate(cp.t, d, vm)
}

func (cp *campaign) host(id string) int { return hostIndex(cp.t, cp.l, id) }

// beforeMigrate counts a duplicate when libvirt already runs a job of vm.
func (cp *campaign) beforeMigrate(vm string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if jobs, _ := cp.l.Jobs(ctx, vm); len(jobs) > 0 {
		cp.dups++
		cp.t.Errorf("DUPLICATE: a migrate call for %s while libvirt runs its job on %s", vm, jobs[0].Host)
	}
}

// driver connects to the lab through dial; every host is given ten cores (so
// calm sees no overload) and 4 GiB.
func (cp *campaign) driver(dial func(context.Context, string, string) (net.Conn, error)) *libvirt.Driver {
	var hosts []libvirt.HostConfig
	for _, h := range cp.l.Hosts {
		hosts = append(hosts, libvirt.HostConfig{ID: h.ID, URI: h.URI(), MigrateURI: h.MigrateURI(),
			Capacity: model.Resources{CPU: 10 * cp.mhz, Mem: 4096}, Cores: 10})
	}
	d, err := libvirt.New(libvirt.Config{Hosts: hosts, Dial: dial, DialTimeout: 2 * time.Second, PollInterval: 200 * time.Millisecond})
	if err != nil {
		cp.t.Fatal(err)
	}
	return d
}

// ctl is one controller of the campaign, on the campaign's log.
type ctl struct {
	c     *controller.Controller
	w     *watched
	drv   *libvirt.Driver
	k     *killable
	calls int
}

// newCtl starts a controller in mode whose rules are the static ones plus pins:
// each VM but mover stays where it is, and mover may be only on its host or dst,
// so that draining mover's host moves mover to dst and nothing else. It
// reconciles the log first, as a starting controller does.
func (cp *campaign) newCtl(mode controller.Mode, mover string, dst ...string) *ctl {
	return cp.newCtlOn(cp.log, mode, controller.HAConfig{}, mover, dst...)
}

// newCtlOn is newCtl on log, with an ha section (a replica: call UseHA).
func (cp *campaign) newCtlOn(log *store.Log, mode controller.Mode, hc controller.HAConfig, mover string, dst ...string) *ctl {
	t := cp.t
	k := &killable{l: cp.l}
	x := &ctl{k: k}
	x.drv = cp.driver(k.Dial)
	x.w = &watched{Driver: x.drv, cp: cp, calls: &x.calls}
	rules := slices.Clone(cp.static)
	for _, vm := range cp.vms {
		if mover == "" {
			break // no move wanted: the static rules only
		}
		hosts := []string{cp.where[vm]}
		if vm == mover {
			hosts = append(hosts, dst...)
		}
		rules = append(rules, model.Rule{Name: "pin-" + vm, Kind: model.HostAffinity, Must: true, VMs: []string{vm}, Hosts: hosts})
	}
	cfg := controller.Config{Interval: 2 * time.Second, Mode: mode, Policy: cp.policy, Rules: rules,
		MaxBandwidthMiBps: moveMiBps, CollectTimeout: collectTimeout, StallTimeout: stallTimeout,
		MigrationTimeout: 2 * time.Minute, HostCooldown: 4 * time.Second, FailureBackoff: time.Second, EventLog: cp.logPath, HA: hc}
	for _, h := range cp.l.Hosts {
		cfg.Hosts = append(cfg.Hosts, controller.HostConfig{ID: h.ID, URI: h.URI()})
	}
	c, err := controller.New(cfg, x.w, log)
	if err != nil {
		t.Fatal(err)
	}
	x.c = c
	if err := c.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	return x
}

// done waits for x's migrations and closes its connections.
func (cp *campaign) done(x *ctl) {
	cp.t.Helper()
	ch := make(chan struct{})
	go func() { x.c.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(3 * time.Minute):
		cp.t.Fatalf("migrations still running after 3m: %v", x.c.InFlight())
	}
	x.drv.Close()
}

// kill kills x as SIGKILL would and reopens the log for the next controller.
func (cp *campaign) kill(x *ctl) {
	cp.log.Close()
	x.k.kill()
	log, err := store.Open(cp.logPath)
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.log = log
	go func() { x.c.Wait(); x.drv.Close() }() // its goroutines find the log closed
}

// drain asks x to drain src; it reports the VMs started.
func (cp *campaign) drain(x *ctl, src string) []string {
	cp.t.Helper()
	before := x.c.InFlight()
	if _, err := x.c.Drain(context.Background(), src); err != nil {
		cp.t.Fatalf("drain %s: %v", src, err)
	}
	var started []string
	for _, vm := range x.c.InFlight() {
		if !slices.Contains(before, vm) {
			started = append(started, vm)
		}
	}
	return started
}

// target picks a host for vm other than its own where the static rules let it
// run, preferring the emptiest; not one of avoid.
func (cp *campaign) target(vm string, avoid ...string) string {
	count := map[string]int{}
	for _, h := range cp.where {
		count[h]++
	}
	best := ""
	for _, h := range cp.l.Hosts {
		if h.ID == cp.where[vm] || slices.Contains(avoid, h.ID) {
			continue
		}
		trial := map[string]string{}
		for k, v := range cp.where {
			trial[k] = v
		}
		trial[vm] = h.ID
		if len(violations(cp.static, trial)) > 0 {
			continue
		}
		if best == "" || count[h.ID] < count[best] {
			best = h.ID
		}
	}
	if best == "" {
		cp.t.Fatalf("no target for %s from %v", vm, cp.where)
	}
	return best
}

// violations are the must rules broken by a placement.
func violations(rs []model.Rule, where map[string]string) []string {
	var out []string
	for _, r := range rs {
		if !r.Must {
			continue
		}
		switch r.Kind {
		case model.AntiAffinity:
			seen := map[string]string{}
			for _, vm := range r.VMs {
				h, ok := where[vm]
				if !ok {
					continue
				}
				if o, ok := seen[h]; ok {
					out = append(out, fmt.Sprintf("%s: %s and %s both on %s", r.Name, o, vm, h))
				}
				seen[h] = vm
			}
		case model.HostAntiAffinity:
			for _, vm := range r.VMs {
				if h, ok := where[vm]; ok && slices.Contains(r.Hosts, h) {
					out = append(out, fmt.Sprintf("%s: %s on %s", r.Name, vm, h))
				}
			}
		case model.HostAffinity:
			for _, vm := range r.VMs {
				if h, ok := where[vm]; ok && !slices.Contains(r.Hosts, h) {
					out = append(out, fmt.Sprintf("%s: %s on %s", r.Name, vm, h))
				}
			}
		}
	}
	return out
}

// midway waits until libvirt's job of vm has moved data: the fault then lands
// mid-migration, not before or after it.
// moveMidway drains vm's host under a controller whose rules leave vm one
// target, and returns once libvirt's job for vm has moved data.
func (cp *campaign) moveMidway(vm string) (src, dst string, x *ctl, seq uint64) {
	src, dst = cp.where[vm], cp.target(vm)
	x = cp.newCtl(controller.Auto, vm, dst)
	seq = cp.lastSeq()
	if got := cp.drain(x, src); !slices.Equal(got, []string{vm}) {
		cp.t.Fatalf("drain %s started %v, want %s", src, got, vm)
	}
	cp.midway(vm)
	return src, dst, x, seq
}

func (cp *campaign) midway(vm string) {
	cp.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		jobs, _ := cp.l.Jobs(ctx, vm)
		cancel()
		for _, j := range jobs {
			if j.DataProcessed > 0 {
				if j.DataTotal > 0 && j.DataProcessed > j.DataTotal*3/4 {
					cp.t.Logf("%s's job is %d of %d bytes in already", vm, j.DataProcessed, j.DataTotal)
				}
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cp.t.Fatalf("%s: no migration job moved data within 60s", vm)
}

// served runs a cycle of x and reports the hosts outside faulty, or their
// guests, that it did not read.
func (cp *campaign) served(x *ctl, faulty ...string) string {
	cy, err := x.c.Step(context.Background())
	if err != nil {
		return "cycle: " + err.Error()
	}
	var miss []string
	for _, h := range cp.l.Hosts {
		if slices.Contains(faulty, h.ID) {
			continue
		}
		if !slices.ContainsFunc(cy.Snapshot.Hosts, func(m model.Host) bool { return m.ID == h.ID }) {
			miss = append(miss, h.ID)
			continue
		}
		for vm, on := range cp.where {
			if on == h.ID && !slices.ContainsFunc(cy.Snapshot.VMs, func(v model.VM) bool { return v.ID == vm }) {
				miss = append(miss, vm+"@"+h.ID)
			}
		}
	}
	if len(miss) > 0 {
		cp.unserved++
		cp.t.Errorf("UNSERVED during the fault on %v: %v", faulty, miss)
		return "not served: " + strings.Join(miss, ",")
	}
	return ""
}

// settleJobs waits until libvirt runs no job of the campaign's guests and
// every host answers.
func (cp *campaign) settleJobs() {
	cp.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		busy := false
		var silent []string
		for _, vm := range cp.vms {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			jobs, s := cp.l.Jobs(ctx, vm)
			cancel()
			busy = busy || len(jobs) > 0
			silent = s
		}
		if !busy && len(silent) == 0 {
			return
		}
		if time.Now().After(deadline) {
			cp.t.Fatalf("jobs still run or hosts %v silent after 2m", silent)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// closeOut runs cycles of x, the fault's controller, until the log has no
// open migration, at most n: a needs-attention record, or one whose end could
// not be written, is closed once the hosts answer and the log takes it. It
// reports how many cycles it took.
func (cp *campaign) closeOut(x *ctl, n int) int {
	x.c.Wait()
	open, _ := cp.log.InFlight()
	if len(open) == 0 {
		return 0
	}
	for i := 1; i <= n; i++ {
		x.c.Wait()
		if open, _ := cp.log.InFlight(); len(open) == 0 {
			return i
		}
		x.c.Step(context.Background())
		time.Sleep(time.Second)
	}
	return n
}

// check verifies the invariants after a fault and prints its FAULT line.
func (cp *campaign) check(kind, outcome string, t0 time.Time) {
	t := cp.t
	t.Helper()
	var notes []string
	// A libvirtd the fault did not mean to leave dead (a crash) is noted and
	// started again, so that the campaign can go on.
	for _, h := range cp.l.Hosts {
		if !cp.l.LibvirtdAlive(h.Index) {
			cp.crashes++
			t.Logf("CRASH after %s: %s's libvirtd is gone; its log ends:\n%s", kind, h.ID, lab.LogTail(h, 2000))
			notes = append(notes, h.ID+"'s libvirtd crashed")
			if err := cp.l.StartLibvirtd(context.Background(), h.Index); err != nil {
				t.Fatal(err)
			}
		}
	}
	cp.settleJobs()
	// Every VM on exactly one host, running.
	status := cp.l.Status(context.Background())
	running := map[string][]string{}
	for _, hs := range status {
		if hs.Err != "" {
			t.Fatalf("%s: %s", hs.Host.ID, hs.Err)
		}
		for _, d := range hs.Domains {
			if d.State == "running" {
				running[d.Name] = append(running[d.Name], hs.Host.ID)
			} else if slices.Contains(cp.vms, d.Name) {
				notes = append(notes, d.Name+" "+d.State+" on "+hs.Host.ID)
			}
		}
	}
	now := map[string]string{}
	for _, vm := range cp.vms {
		hs := running[vm]
		if len(hs) != 1 {
			cp.lost++
			t.Errorf("LOST after %s: %s runs on %v", kind, vm, hs)
			notes = append(notes, fmt.Sprintf("%s on %v", vm, hs))
			continue
		}
		now[vm] = hs[0]
	}
	// Every migration has a final state; no VM moved without one.
	open, err := cp.log.InFlight()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range open {
		cp.unfinished++
		t.Errorf("UNFINISHED after %s: %s's migration %s -> %s (#%d) has no final state", kind, e.VM, e.Source, e.Target, e.Seq)
	}
	all := list(t, cp.log, store.Filter{})
	for vm, h := range now {
		if h == cp.where[vm] {
			continue
		}
		recorded := false
		for _, e := range all {
			if e.Seq > cp.seq && e.VM == vm && (e.Kind == store.MigrationEnd || e.Kind == store.Reconciled) && e.Target == h &&
				(e.State == store.StateCompleted || e.State == "elsewhere") {
				recorded = true
			}
		}
		if !recorded {
			cp.unfinished++
			t.Errorf("UNFINISHED after %s: %s moved %s -> %s and the log has no completed migration for it", kind, vm, cp.where[vm], h)
		}
	}
	// No VM migrated twice at once, as the log tells it.
	openAt := map[string]bool{}
	dups := 0
	for _, e := range all {
		switch e.Kind {
		case store.MigrationStart:
			if openAt[e.VM] {
				dups++
				if e.Seq > cp.seq {
					t.Errorf("DUPLICATE after %s: %s started again (#%d) while its last migration was open", kind, e.VM, e.Seq)
				}
			}
			openAt[e.VM] = true
		case store.MigrationEnd, store.Reconciled:
			if store.Settled(e.State) {
				openAt[e.VM] = false
			}
		}
	}
	cp.dups += dups - cp.logDups
	cp.logDups = dups
	// No must rule broken.
	for _, v := range violations(cp.static, now) {
		cp.breaches++
		t.Errorf("BREACH after %s: %s", kind, v)
	}
	for vm, h := range now {
		cp.where[vm] = h
	}
	if len(all) > 0 {
		cp.seq = all[len(all)-1].Seq
	}
	if len(notes) > 0 {
		outcome += " [" + strings.Join(notes, "; ") + "]"
	}
	took := time.Since(t0)
	cp.rows = append(cp.rows, faultRow{kind: kind, outcome: outcome, took: took})
	fmt.Printf("FAULT %-2d %-22s %s (%.0fs) placement=%s\n", len(cp.rows), kind, outcome, took.Seconds(), cp.placement())
}

func (cp *campaign) placement() string {
	var s []string
	for _, vm := range cp.vms {
		s = append(s, vm+"@"+cp.where[vm])
	}
	return strings.Join(s, ",")
}

// ends are vm's migration ends and reconciliations since seq.
func (cp *campaign) endsSince(vm string, seq uint64) []store.Event {
	var out []store.Event
	for _, e := range list(cp.t, cp.log, store.Filter{VM: vm}) {
		if e.Seq > seq && (e.Kind == store.MigrationEnd || e.Kind == store.Reconciled) {
			out = append(out, e)
		}
	}
	return out
}

func (cp *campaign) startsSince(vm string, seq uint64) int {
	n := 0
	for _, e := range list(cp.t, cp.log, store.Filter{VM: vm, Kind: store.MigrationStart}) {
		if e.Seq > seq {
			n++
		}
	}
	return n
}

func summary(es []store.Event) string {
	var s []string
	for _, e := range es {
		x := e.State
		if e.Kind == store.Reconciled {
			x = "reconciled:" + e.State
		}
		s = append(s, x)
	}
	return strings.Join(s, ",")
}

func (cp *campaign) lastSeq() uint64 {
	es := list(cp.t, cp.log, store.Filter{Limit: 1})
	if len(es) == 0 {
		return 0
	}
	return es[0].Seq
}

// TestFaultCampaign injects at least 20 faults of at least 6 kinds into the lab
// and checks the invariants after each; see the file comment.
func TestFaultCampaign(t *testing.T) {
	l := lab.Shared(t)
	tStart := time.Now()
	etcd := startEtcd(t) // for the leader-lost faults
	dir := filepath.Join(t.TempDir(), "log")
	unmount, err := lab.TinyFS(context.Background(), dir, 32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount() })
	for i := range l.Hosts {
		t.Cleanup(func() {
			ctx := context.Background()
			l.SignalLibvirtd(i, syscall.SIGCONT)
			l.LinkUp(ctx, i)
			l.Unstarve(ctx, i)
			if !l.LibvirtdAlive(i) {
				l.StartLibvirtd(ctx, i)
			}
		})
	}
	// Three guests, one a host. fa and fb may never share a host, and fc
	// may never run on host0: the must rules the campaign checks.
	bootEach(t, l, small("fa"), small("fb"), small("fc"))
	cp := &campaign{t: t, l: l, policy: writePolicy(t, calm), logPath: filepath.Join(dir, "events.db"),
		vms: []string{"fa", "fb", "fc"}, mhz: coreMHz(t, l),
		where: map[string]string{"fa": "host0", "fb": "host1", "fc": "host2"},
		static: []model.Rule{
			{Name: "fa-fb-apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"fa", "fb"}},
			{Name: "fc-not-host0", Kind: model.HostAntiAffinity, Must: true, VMs: []string{"fc"}, Hosts: []string{"host0"}},
		}}
	cp.log, err = store.Open(cp.logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.log.Close() })
	defer func() {
		if t.Failed() {
			for _, h := range l.Hosts {
				t.Logf("%s libvirtd alive=%v; its log ends:\n%s", h.ID, l.LibvirtdAlive(h.Index), lab.LogTail(h, 3000))
			}
		}
	}()
	defer func() {
		if t.Failed() {
			// The log without the filler events of the disk-full faults.
			n := 0
			for _, e := range list(t, cp.log, store.Filter{}) {
				if strings.HasPrefix(e.Message, "fault campaign: filling") {
					n++
					continue
				}
				t.Logf("#%d %s %s vm=%s %s->%s host=%s state=%s %s %s", e.Seq, e.Time.Format("15:04:05.0"), e.Kind, e.VM, e.Source, e.Target, e.Host, e.State, e.Message, e.Error)
			}
			t.Logf("(%d filler events left out)", n)
		}
	}()
	t.Logf("guests up after %v", time.Since(tStart).Round(time.Second))

	// The summary, even when a fault stops the campaign (t.Fatal).
	defer func() {
		kinds := map[string]int{}
		for _, r := range cp.rows {
			kinds[r.kind]++
		}
		var ks []string
		for k, n := range kinds {
			ks = append(ks, fmt.Sprintf("%s=%d", k, n))
		}
		sort.Strings(ks)
		fmt.Printf("FAULTS injected=%d kinds=%d lost=%d duplicates=%d breaches=%d unfinished=%d\n",
			len(cp.rows), len(kinds), cp.lost, cp.dups, cp.breaches, cp.unfinished)
		t.Logf("by kind: %s; unserved=%d libvirtd-crashes=%d; campaign took %v", strings.Join(ks, " "), cp.unserved, cp.crashes, time.Since(tStart).Round(time.Second))
		if len(cp.rows) < 20 || len(kinds) < 6 {
			t.Errorf("%d faults of %d kinds, want at least 20 of 6", len(cp.rows), len(kinds))
		}
		if cp.lost+cp.dups+cp.breaches+cp.unfinished+cp.unserved > 0 {
			t.Errorf("lost=%d duplicates=%d breaches=%d unfinished=%d unserved=%d, want all 0", cp.lost, cp.dups, cp.breaches, cp.unfinished, cp.unserved)
		}
	}()
	// A fault that breaks an invariant is reported and the campaign goes on:
	// check() measures the state each fault leaves, whatever came before.
	step := func(name string, f func()) { f() }
	step("hung", cp.faultHung)
	step("target-killed", func() { cp.faultTargetKilled(true) })
	step("target-killed", func() { cp.faultTargetKilled(false) })
	step("source-killed", cp.faultSourceKilled)
	step("source-killed", cp.faultSourceKilled)
	for _, at := range []string{"planned", "approved", "started", "copying", "verifying"} {
		step("controller-killed", func() { cp.faultControllerKilled(at) })
	}
	step("hung", cp.faultHungTarget)
	step("link-cut", func() { cp.faultLinkCut(false) })
	step("link-cut", func() { cp.faultLinkCut(true) })
	step("link-flap", cp.faultLinkFlap)
	step("starved", func() { cp.faultStarved(true) })
	step("starved", func() { cp.faultStarved(false) })
	step("disk-full", func() { cp.faultDiskFull(false) })
	step("disk-full", func() { cp.faultDiskFull(true) })
	step("host-vanished", func() { cp.faultVanished(true) })
	step("host-vanished", func() { cp.faultVanished(false) })
	step("leader-lost", func() { cp.faultLeaderLost(etcd, 1) })
	step("leader-lost", func() { cp.faultLeaderLost(etcd, 2) })

}

// faultHung: host2's libvirtd stopped (SIGSTOP). A cycle's reads of the other
// hosts end by the collection deadline, with their guests; host2 is logged as
// silent; the next cycle costs no more (#11).
func (cp *campaign) faultHung() {
	t, l := cp.t, cp.l
	t0 := time.Now()
	x := cp.newCtl(controller.Auto, "")
	defer cp.done(x)
	if _, err := x.c.Step(context.Background()); err != nil { // connected and warm
		t.Fatal(err)
	}
	seq := cp.lastSeq()
	if err := l.SignalLibvirtd(2, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var tooks []string
	for i := range 2 {
		c0 := time.Now()
		cy, err := x.c.Step(context.Background())
		took := time.Since(c0)
		if err != nil {
			t.Fatal(err)
		}
		var hosts, guests []string
		for _, h := range cy.Snapshot.Hosts {
			hosts = append(hosts, h.ID)
		}
		for _, v := range cy.Snapshot.VMs {
			guests = append(guests, v.ID)
		}
		tooks = append(tooks, took.Round(10*time.Millisecond).String())
		if took > collectTimeout+2*time.Second {
			t.Errorf("cycle %d took %v with a %v collection deadline", i, took, collectTimeout)
		}
		if !slices.Equal(hosts, []string{"host0", "host1"}) || !slices.Contains(guests, "fa") || !slices.Contains(guests, "fb") {
			cp.unserved++
			t.Errorf("cycle %d: hosts %v, guests %v: want host0 and host1 with fa and fb", i, hosts, guests)
		}
	}
	l.SignalLibvirtd(2, syscall.SIGCONT)
	// Each cycle logs host2 left out: the first past the collection deadline,
	// later ones as unreachable (the driver dropped the hung connection).
	silent, deadline := 0, 0
	for _, e := range list(t, cp.log, store.Filter{Kind: store.Failure}) {
		if e.Seq > seq && e.Host == "host2" && strings.Contains(e.Message, "left out of this cycle") {
			silent++
			if strings.Contains(e.Message, "collection deadline") {
				deadline++
			}
		}
	}
	if silent < 2 || deadline < 1 {
		t.Errorf("%d failures name host2 left out (%d past the collection deadline), want one a cycle, the first past the deadline", silent, deadline)
	}
	cp.check("hung", fmt.Sprintf("host2 stopped: cycles took %s (deadline %v), host0+host1 served, host2 logged silent %dx", strings.Join(tooks, ", "), collectTimeout, silent), t0)
}

// faultTargetKilled: a move's target libvirtd is killed mid-move. The move ends
// failed with libvirt's error and no downtime; the guest keeps running on its
// source, making progress. With revive (as TestHostFaults did): the dead host
// is set aside and logged down; once its libvirtd is back it is logged up and
// the same controller's next move goes to it and completes.
func (cp *campaign) faultTargetKilled(revive bool) {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fa"
	src, dst, x, seq := cp.moveMidway(vm)
	dead := cp.host(dst)
	if err := l.KillLibvirtd(dead); err != nil {
		t.Fatal(err)
	}
	unserved := cp.served(x, dst)
	x.c.Wait()
	ends := cp.endsSince(vm, seq)
	if len(ends) == 0 {
		t.Fatalf("no end of %s's move", vm)
	}
	end := ends[0]
	if end.State != store.StateFailed || end.Error == "" || end.DowntimeMs != 0 {
		t.Errorf("end %+v: want failed, with libvirt's error and no downtime", end)
	}
	loc := cp.locate(vm)
	if loc.Host != src || loc.States[src] != hypervisor.StateRunning {
		t.Errorf("%s after the failed move: %+v, want running on %s", vm, loc, src)
	}
	if _, err := l.WaitProgress(context.Background(), cp.host(src), vm, 1, 30*time.Second); err != nil {
		t.Errorf("%s stalled on %s: %v", vm, src, err)
	}
	outcome := fmt.Sprintf("%s->%s: %s (%q), stays on %s, running", src, dst, end.State, firstLine(end.Error), src)
	if revive {
		// Cycles while it is dead see it down.
		x.c.Step(context.Background())
	}
	if err := l.StartLibvirtd(context.Background(), dead); err != nil {
		t.Fatal(err)
	}
	if revive {
		var got []string
		for range 8 { // until the host is back in view and past its cool-down
			x.c.Step(context.Background())
			if got = cp.drain(x, src); len(got) > 0 {
				break
			}
			time.Sleep(time.Second)
		}
		x.c.Wait()
		e := cp.endsSince(vm, seq)
		if !slices.Equal(got, []string{vm}) || e[len(e)-1].State != store.StateCompleted || e[len(e)-1].Target != dst {
			t.Errorf("move to the revived %s: started %v, end %+v", dst, got, e[len(e)-1])
		}
		var states []string
		for _, ev := range list(t, cp.log, store.Filter{Kind: store.HostState}) {
			if ev.Seq > seq && ev.Host == dst {
				states = append(states, ev.State)
			}
		}
		if !slices.Contains(states, "aside") || !slices.Contains(states, "down") || !slices.Contains(states, "up") {
			t.Errorf("%s's state changes %v: want aside (the move's connection failed), down, then up", dst, states)
		}
		outcome += fmt.Sprintf("; %s %v; revived %s took it: %s", dst, states, dst, e[len(e)-1].State)
	}
	cp.done(x)
	cp.check("target-killed", outcome+unserved, t0)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

// faultSourceKilled: a move's source libvirtd is killed mid-move, then
// restarted. Libvirt's own recovery decides the job; the controller must end
// the record where libvirt has the guest, once the source answers.
func (cp *campaign) faultSourceKilled() {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fb"
	src, dst, x, seq := cp.moveMidway(vm)
	dead := cp.host(src)
	if err := l.KillLibvirtd(dead); err != nil {
		t.Fatal(err)
	}
	unserved := cp.served(x, src)
	time.Sleep(2 * time.Second)
	if err := l.StartLibvirtd(context.Background(), dead); err != nil {
		t.Fatal(err)
	}
	n := cp.closeOut(x, 10)
	cp.done(x)
	ends := cp.endsSince(vm, seq)
	cp.check("source-killed", fmt.Sprintf("%s->%s: log %s; closed after %d more cycles%s", src, dst, summary(ends), n, unserved), t0)
}

// faultControllerKilled kills the controller with vm's move in state at
// (planned, approved, started: recorded but not yet asked of libvirt, copying:
// libvirt runs the job, verifying: the job has ended and its outcome is not
// recorded), then starts a new one on the same log. The new one settles what
// the log leaves open, never starts a second migration of the VM while one
// runs, and finishes the move at most once.
func (cp *campaign) faultControllerKilled(at string) {
	t := cp.t
	t0 := time.Now()
	vm := "fc"
	src := cp.where[vm]
	dst := cp.target(vm)
	seq := cp.lastSeq()
	mode := controller.Auto
	if at == "planned" || at == "approved" {
		mode = controller.Approve
	}
	x := cp.newCtl(mode, vm, dst)
	killed := make(chan struct{})
	switch at {
	case "started":
		x.w.onMigrate = func(string) error {
			cp.kill(x)
			close(killed)
			return errors.New("the process died before the call")
		}
	case "verifying":
		x.w.onJobEnd = func(string) {
			cp.kill(x)
			close(killed)
		}
	}
	got := cp.drain(x, src)
	switch at {
	case "planned":
		if len(got) != 0 || len(x.c.Pending()) != 1 {
			t.Fatalf("approve mode: started %v, pending %v", got, x.c.Pending())
		}
		cp.kill(x)
	case "approved":
		if err := x.c.ApproveVM(vm); err != nil {
			t.Fatal(err)
		}
		cp.kill(x)
	case "started":
		<-killed
	case "copying":
		cp.midway(vm)
		cp.kill(x)
	case "verifying":
		select {
		case <-killed:
		case <-time.After(3 * time.Minute):
			t.Fatal("the move did not end")
		}
	}
	killedIn := "?"
	if es := list(t, cp.log, store.Filter{VM: vm}); len(es) > 0 {
		killedIn = es[len(es)-1].Kind + "/" + es[len(es)-1].State
	}
	// The restart: reconcile (in newCtl), then a drain wants the move again.
	y := cp.newCtl(controller.Auto, vm, dst)
	adopted := y.c.InFlight()
	if at == "copying" && !slices.Equal(adopted, []string{vm}) {
		t.Errorf("after the restart in flight: %v, want %s adopted", adopted, vm)
	}
	for i := 0; i < 3 && len(y.c.InFlight()) > 0; i++ {
		// Cycles and a drain while the adopted job runs start nothing of vm.
		y.c.Step(context.Background())
		time.Sleep(time.Second)
	}
	y.c.Wait()
	again := []string{}
	if loc := cp.locate(vm); loc.Host == src {
		again = cp.drain(y, src)
	}
	cp.done(y)
	ends := cp.endsSince(vm, seq)
	starts := cp.startsSince(vm, seq)
	loc := cp.locate(vm)
	if loc.Host != dst {
		t.Errorf("after the restart %s is on %s, want %s", vm, loc.Host, dst)
	}
	cp.check("controller-killed", fmt.Sprintf("in %s (log: %s): restart adopted %v, redrained %v; log %s; %d start(s); on %s",
		at, killedIn, adopted, again, summary(ends), starts, loc.Host), t0)
}

// faultHungTarget: a move's target libvirtd is stopped (SIGSTOP) mid-move for
// a few seconds, then woken.
func (cp *campaign) faultHungTarget() {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fa"
	src, dst, x, seq := cp.moveMidway(vm)
	i := cp.host(dst)
	if err := l.SignalLibvirtd(i, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	unserved := cp.served(x, dst)
	time.Sleep(3 * time.Second)
	l.SignalLibvirtd(i, syscall.SIGCONT)
	n := cp.closeOut(x, 10)
	cp.done(x)
	cp.check("hung", fmt.Sprintf("%s->%s with the target stopped ~6s: log %s; closed after %d more cycles%s", src, dst, summary(cp.endsSince(vm, seq)), n, unserved), t0)
}

// faultLinkCut: the migration link cut mid-move (the target's, or with source
// the source's, eth0 down) until the controller aborts the stalled move, then
// restored.
func (cp *campaign) faultLinkCut(source bool) {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fb"
	src, dst, x, seq := cp.moveMidway(vm)
	cut := dst
	if source {
		cut = src
	}
	if err := l.LinkDown(context.Background(), cp.host(cut)); err != nil {
		t.Fatal(err)
	}
	unserved := cp.served(x, cut)
	// The controller aborts after stall_timeout of no data, or the job fails.
	deadline := time.Now().Add(stallTimeout + 30*time.Second)
	for time.Now().Before(deadline) && len(cp.endsSince(vm, seq)) == 0 {
		time.Sleep(500 * time.Millisecond)
	}
	down := time.Since(t0)
	if err := l.LinkUp(context.Background(), cp.host(cut)); err != nil {
		t.Fatal(err)
	}
	n := cp.closeOut(x, 15)
	cp.done(x)
	cp.check("link-cut", fmt.Sprintf("%s->%s, %s's link down %.0fs: log %s; closed after %d more cycles%s",
		src, dst, cut, down.Seconds(), summary(cp.endsSince(vm, seq)), n, unserved), t0)
}

// faultLinkFlap: the target's link down for 3 s mid-move, then up: TCP
// carries the stream on.
func (cp *campaign) faultLinkFlap() {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fc"
	src, dst, x, seq := cp.moveMidway(vm)
	if err := l.LinkDown(context.Background(), cp.host(dst)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := l.LinkUp(context.Background(), cp.host(dst)); err != nil {
		t.Fatal(err)
	}
	n := cp.closeOut(x, 15)
	cp.done(x)
	cp.check("link-flap", fmt.Sprintf("%s->%s, %s's link down 3s: log %s; closed after %d more cycles",
		src, dst, dst, summary(cp.endsSince(vm, seq)), n), t0)
}

// faultStarved: the source's outgoing migration streams capped to a trickle
// (8 kbit/s, tc htb+tbf) mid-move. Held, the controller aborts the move as
// stalled; lifted after 4 s (hold false), the move completes.
func (cp *campaign) faultStarved(hold bool) {
	t, l := cp.t, cp.l
	t0 := time.Now()
	vm := "fa"
	src, dst, x, seq := cp.moveMidway(vm)
	if err := l.Starve(context.Background(), cp.host(src), "8kbit"); err != nil {
		t.Fatal(err)
	}
	unserved := cp.served(x)
	if hold {
		deadline := time.Now().Add(stallTimeout + 60*time.Second)
		for time.Now().Before(deadline) && len(cp.endsSince(vm, seq)) == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	} else {
		time.Sleep(4 * time.Second)
	}
	held := time.Since(t0)
	if err := l.Unstarve(context.Background(), cp.host(src)); err != nil {
		t.Fatal(err)
	}
	n := cp.closeOut(x, 10)
	cp.done(x)
	ends := cp.endsSince(vm, seq)
	if hold && (len(ends) == 0 || ends[0].State != store.StateAborted) {
		t.Errorf("a move starved for good: %s, want aborted as stalled", summary(ends))
	}
	cp.check("starved", fmt.Sprintf("%s->%s at 8kbit/s for %.0fs: log %s; closed after %d more cycles%s",
		src, dst, held.Seconds(), summary(ends), n, unserved), t0)
}

// faultDiskFull: the event log's file system full. Before the move is
// planned (mid false): nothing may migrate without its record, and once space
// is freed the move is made and recorded. Mid-move: the end cannot be
// recorded; once space is freed the log must still end up with it.
func (cp *campaign) faultDiskFull(mid bool) {
	t := cp.t
	t0 := time.Now()
	vm := "fb"
	src := cp.where[vm]
	dst := cp.target(vm)
	filler := filepath.Join(filepath.Dir(cp.logPath), "filler")
	fill := func() int {
		if _, err := lab.Fill(filler); err != nil {
			t.Fatal(err)
		}
		// bbolt reuses freed pages: append, smaller and smaller, until even a
		// short event finds no room three times in a row.
		n := 0
		for _, size := range []int{4000, 1000, 300, 100, 10} {
			for fails, i := 0, 0; fails < 3; i++ {
				if _, err := cp.log.Append(store.Event{Kind: store.Warning, Message: "fault campaign: filling the disk " + strings.Repeat("x", size)}); err != nil {
					fails++
				} else {
					fails = 0
					n++
				}
				if i > 20000 {
					t.Fatal("the event log never filled up")
				}
			}
		}
		return n
	}
	seq := cp.lastSeq()
	x := cp.newCtl(controller.Auto, vm, dst)
	var outcome string
	if !mid {
		filled := fill()
		got := cp.drain(x, src)
		x.c.Wait()
		calls := x.calls
		os.Remove(filler)
		outcome = fmt.Sprintf("full before the move (%d filler events fit): started %v, %d migrate call(s)", filled, got, calls)
		if calls > 0 || len(got) > 0 {
			t.Errorf("a migration reached libvirt while its records could not be written")
		}
		var again []string
		if loc := cp.locate(vm); loc.Host == src {
			again = cp.drain(x, src)
		}
		x.c.Wait()
		outcome += fmt.Sprintf("; space freed: started %v, log %s", again, summary(cp.endsSince(vm, seq)))
		cp.done(x)
	} else {
		if got := cp.drain(x, src); !slices.Equal(got, []string{vm}) {
			t.Fatalf("drain %s started %v, want %s", src, got, vm)
		}
		cp.midway(vm)
		filled := fill()
		x.c.Wait()
		outcome = fmt.Sprintf("full mid-move (%d filler events fit): log %s", filled, summary(cp.endsSince(vm, seq)))
		os.Remove(filler)
		n := cp.closeOut(x, 5)
		cp.done(x)
		outcome += fmt.Sprintf("; space freed, closed after %d more cycles: log %s", n, summary(cp.endsSince(vm, seq)))
	}
	cp.check("disk-full", outcome, t0)
}

// faultVanished: mid-move, the move's target (or source) vanishes from the
// driver's listing of hosts, VMs and stats (a host taken out of the inventory)
// for a few cycles, then comes back.
func (cp *campaign) faultVanished(target bool) {
	t0 := time.Now()
	vm := "fc"
	src, dst, x, seq := cp.moveMidway(vm)
	gone := src
	if target {
		gone = dst
	}
	x.w.hide(gone)
	unserved := cp.served(x, gone)
	for range 2 {
		time.Sleep(time.Second)
		x.c.Step(context.Background())
	}
	x.w.hide("")
	n := cp.closeOut(x, 5)
	cp.done(x)
	cp.check("host-vanished", fmt.Sprintf("%s->%s, %s out of the listing for 3 cycles: log %s; closed after %d more cycles%s",
		src, dst, gone, summary(cp.endsSince(vm, seq)), n, unserved), t0)
}

// bootEach starts guest i on host i, all at once, and waits until each prints
// progress; they are destroyed when the test ends.
func bootEach(t *testing.T, l *lab.Lab, specs ...lab.VMSpec) {
	t.Helper()
	bootOn(t, l, func(i int) int { return i }, specs...)
}

// startEtcd starts etcd (etcdtest.Start) from an OS thread that stays alive
// until the test ends. etcdtest sets Pdeathsig, which fires when the *thread*
// that forked etcd exits, and the lab's dials (lab.DialInNetns) end their
// threads: etcd started from an ordinary goroutine is killed at a random
// moment of a lab test.
func startEtcd(t *testing.T) *etcdtest.Server {
	t.Helper()
	if _, err := etcdtest.Binary(); err != nil {
		return etcdtest.Start(t) // skips, or fails with HEADROOM_LAB_REQUIRED=1
	}
	got := make(chan *etcdtest.Server)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after etcd's own Stop
	go func() {
		runtime.LockOSThread()
		got <- etcdtest.Start(t)
		<-release
	}()
	return <-got
}
