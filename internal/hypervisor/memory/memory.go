// Package memory is an in-memory hypervisor.Driver for unit tests of the control
// loop: hosts and VMs are set by the test, load is whatever the test says, and
// migrations follow a small pre-copy model on a virtual clock that the test moves
// with Advance (or that follows the wall clock with Options.Realtime).
package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// Options tune the model.
type Options struct {
	// BandwidthMiBps is the link speed when a migration sets none; default 100.
	BandwidthMiBps float64
	// MaxDowntimeMs is the stop-and-copy budget when a migration sets none; default 300.
	MaxDowntimeMs float64
	// Realtime advances the virtual clock with the wall clock (every 10 ms).
	Realtime bool
}

// Usage is a VM's load as the test sets it.
type Usage struct {
	CPUUtil    float64 // of its vCPUs, 0..1
	MemMiB     float64 // used; default: all of its memory
	NetKBps    float64 // split evenly into rx and tx
	DiskKBps   float64 // split evenly into reads and writes
	DirtyMiBps float64 // drives the migration model
}

// Driver is the in-memory cluster.
type Driver struct {
	opt Options

	mu          sync.Mutex
	now         time.Time
	hosts       []hypervisor.Host
	hostIx      map[string]int // index in hosts by ID: a fleet-sized test looks a host up per VM
	unreachable map[string]bool
	hung        map[string]bool
	vms         map[string]*vmRec
	order       []string // VM IDs in insertion order
	migs        map[string]*mig
	failNext    map[string]error
	lastStats   time.Time
	stop        chan struct{}
	closed      bool
}

type vmRec struct {
	vm    hypervisor.VM
	usage Usage
}

type mig struct {
	t         *hypervisor.Tracker
	src, dst  string
	bw        float64 // bytes per virtual second
	downtime  float64 // seconds of stop-and-copy allowed
	total     float64 // bytes of guest memory
	remaining float64 // bytes dirty and not yet sent this pass
	passLeft  float64 // bytes left of the current pass
	sent      float64
	iter      int
	throttle  float64 // 0..0.99, auto-converge
	postcopy  bool
	elapsed   float64 // virtual seconds
	aborted   bool
}

// New returns a cluster of the given hosts and no VMs.
func New(opt Options, hosts ...hypervisor.Host) *Driver {
	if opt.BandwidthMiBps <= 0 {
		opt.BandwidthMiBps = 100
	}
	if opt.MaxDowntimeMs <= 0 {
		opt.MaxDowntimeMs = 300
	}
	d := &Driver{
		opt:         opt,
		now:         time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		hosts:       slices.Clone(hosts),
		hostIx:      make(map[string]int, len(hosts)),
		unreachable: map[string]bool{},
		hung:        map[string]bool{},
		vms:         map[string]*vmRec{},
		migs:        map[string]*mig{},
		failNext:    map[string]error{},
		stop:        make(chan struct{}),
	}
	for i := range d.hosts {
		h := &d.hosts[i]
		if _, dup := d.hostIx[h.ID]; !dup { // the first of a repeated ID wins, as the scan did
			d.hostIx[h.ID] = i
		}
		if h.PEs > 0 && h.PEMIPS > 0 && h.Capacity.CPU == 0 {
			h.Capacity.CPU = float64(h.PEs) * h.PEMIPS
		}
	}
	if opt.Realtime {
		go d.realtime()
	}
	return d
}

func (d *Driver) realtime() {
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	last := time.Now()
	for {
		select {
		case <-d.stop:
			return
		case now := <-tk.C:
			d.Advance(now.Sub(last))
			last = now
		}
	}
}

// AddVM places a VM on the host vm.Host. Size.CPU defaults to vCPUs x the host's
// PEMIPS and Size.Mem to MemMiB.
func (d *Driver) AddVM(vm hypervisor.VM, u Usage) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, err := d.host(vm.Host)
	if err != nil {
		return err
	}
	if _, dup := d.vms[vm.ID]; dup {
		return fmt.Errorf("vm %s exists", vm.ID)
	}
	if vm.VCPUs == 0 {
		vm.VCPUs = 1
	}
	if vm.State == "" {
		vm.State = hypervisor.StateRunning
	}
	if vm.Size.CPU == 0 {
		vm.Size.CPU = float64(vm.VCPUs) * h.PEMIPS
	}
	if vm.Size.Mem == 0 {
		vm.Size.Mem = vm.MemMiB
	}
	d.vms[vm.ID] = &vmRec{vm: vm, usage: u}
	d.order = append(d.order, vm.ID)
	return nil
}

// SetUsage changes a VM's load.
func (d *Driver) SetUsage(vm string, u Usage) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.vms[vm]
	if !ok {
		return fmt.Errorf("%w: %s", hypervisor.ErrVMNotFound, vm)
	}
	r.usage = u
	return nil
}

// SetUnreachable makes every call that needs host fail as if it were down.
func (d *Driver) SetUnreachable(host string, down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unreachable[host] = down
}

// SetHung makes host silent: every call that needs it blocks until the caller's
// context ends, as a host whose daemon is stopped (SIGSTOP) or whose link is
// down holds a call, and the host is then reported with the context's error.
func (d *Driver) SetHung(host string, hung bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hung[host] = hung
}

// stall waits, outside the lock, until ctx ends if any of hosts (every host when
// none is named) is hung, and returns the hung ones' errors.
func (d *Driver) stall(ctx context.Context, op string, hosts ...string) map[string]error {
	d.mu.Lock()
	if len(hosts) == 0 {
		for _, h := range d.hosts {
			hosts = append(hosts, h.ID)
		}
	}
	var hung []string
	for _, h := range hosts {
		if d.hung[h] {
			hung = append(hung, h)
		}
	}
	d.mu.Unlock()
	if len(hung) == 0 {
		return nil
	}
	<-ctx.Done()
	out := map[string]error{}
	for _, h := range hung {
		out[h] = &hypervisor.HostError{Host: h, URI: "memory://" + h, Op: op, Err: ctx.Err()}
	}
	return out
}

// FailNext makes vm's next migration fail with err part way through.
func (d *Driver) FailNext(vm string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failNext[vm] = err
}

// Now is the virtual clock.
func (d *Driver) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

func (d *Driver) host(id string) (*hypervisor.Host, error) {
	if i, ok := d.hostIx[id]; ok {
		return &d.hosts[i], nil
	}
	return nil, fmt.Errorf("%w: %s", hypervisor.ErrUnknownHost, id)
}

func (d *Driver) reach(id, op string) error {
	return d.reachOr(nil, id, op)
}

// reachOr is reach that also fails the hosts in hung (see stall).
func (d *Driver) reachOr(hung map[string]error, id, op string) error {
	if err := hung[id]; err != nil {
		return err
	}
	if d.unreachable[id] {
		return &hypervisor.HostError{Host: id, URI: "memory://" + id, Op: op, Err: hypervisor.ErrUnreachable}
	}
	return nil
}

// Hosts implements hypervisor.Driver.
func (d *Driver) Hosts(ctx context.Context) ([]hypervisor.Host, error) {
	hung := d.stall(ctx, "hosts")
	d.mu.Lock()
	defer d.mu.Unlock()
	out := slices.Clone(d.hosts)
	var errs []error
	for i := range out {
		if err := d.reachOr(hung, out[i].ID, "hosts"); err != nil {
			out[i].Err = err.Error()
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// VMs implements hypervisor.Driver.
func (d *Driver) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	hung := d.stall(ctx, "list vms")
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]hypervisor.VM, 0, len(d.order))
	var errs []error
	seen := map[string]bool{}
	for _, id := range d.order {
		r := d.vms[id]
		if err := d.reachOr(hung, r.vm.Host, "list vms"); err != nil {
			if !seen[r.vm.Host] {
				errs = append(errs, err)
				seen[r.vm.Host] = true
			}
			continue
		}
		out = append(out, r.vm)
	}
	return out, errors.Join(errs...)
}

// Stats implements hypervisor.Driver. Every sample reports the usage the test set;
// Interval is the virtual time since the previous Stats call, or 1 s if none passed.
func (d *Driver) Stats(ctx context.Context) (hypervisor.Stats, error) {
	hung := d.stall(ctx, "stats")
	d.mu.Lock()
	defer d.mu.Unlock()
	iv := d.now.Sub(d.lastStats)
	if d.lastStats.IsZero() || iv <= 0 {
		iv = time.Second
	}
	d.lastStats = d.now
	st := hypervisor.Stats{Time: d.now, VMs: make([]hypervisor.VMStats, 0, len(d.order)), Hosts: make([]hypervisor.HostStats, 0, len(d.hosts))}
	per := make(map[string]*hypervisor.HostStats, len(d.hosts))
	var errs []error
	for _, h := range d.hosts {
		if err := d.reachOr(hung, h.ID, "stats"); err != nil {
			errs = append(errs, err)
			continue
		}
		per[h.ID] = &hypervisor.HostStats{Host: h.ID}
	}
	for _, id := range d.order {
		r := d.vms[id]
		hs := per[r.vm.Host]
		if hs == nil || !r.vm.State.Active() {
			continue
		}
		u := r.usage
		mem := u.MemMiB
		if mem == 0 {
			mem = r.vm.MemMiB
		}
		cpu := u.CPUUtil
		if m := d.migs[id]; m != nil {
			cpu *= 1 - m.throttle
		}
		st.VMs = append(st.VMs, hypervisor.VMStats{
			VM: id, Host: r.vm.Host, Time: d.now, Interval: iv, VCPUs: r.vm.VCPUs,
			CPUUtil: cpu, CPUCores: cpu * float64(r.vm.VCPUs), MemMiB: r.vm.MemMiB, RSSMiB: mem,
			NetRxKBps: u.NetKBps / 2, NetTxKBps: u.NetKBps / 2,
			DiskRdKBps: u.DiskKBps / 2, DiskWrKBps: u.DiskKBps / 2,
			DirtyMiBps: u.DirtyMiBps,
		})
		h, _ := d.host(r.vm.Host)
		if h.Capacity.CPU > 0 {
			hs.CPUUtil += cpu * r.vm.Size.CPU / h.Capacity.CPU
		}
		hs.MemUsedMiB += mem
		hs.VMs++
	}
	for _, h := range d.hosts {
		if hs := per[h.ID]; hs != nil {
			st.Hosts = append(st.Hosts, *hs)
		}
	}
	return st, errors.Join(errs...)
}

// Locate implements hypervisor.Driver.
func (d *Driver) Locate(ctx context.Context, vm string) (hypervisor.Location, error) {
	hung := d.stall(ctx, "locate")
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(hung) > 0 {
		// The hung hosts count as unreachable for this call.
		saved := maps.Clone(d.unreachable)
		for h := range hung {
			d.unreachable[h] = true
		}
		defer func() { d.unreachable = saved }()
	}
	return d.locate(vm)
}

func (d *Driver) locate(vm string) (hypervisor.Location, error) {
	loc := hypervisor.Location{VM: vm, States: map[string]hypervisor.VMState{}}
	r, ok := d.vms[vm]
	if !ok {
		return loc, fmt.Errorf("%w: %s", hypervisor.ErrVMNotFound, vm)
	}
	for _, h := range d.hosts {
		if d.unreachable[h.ID] {
			loc.Unreachable = append(loc.Unreachable, h.ID)
		}
	}
	if d.unreachable[r.vm.Host] {
		return loc, fmt.Errorf("%w: %s runs on no host that answered: %w", hypervisor.ErrLocationUnknown, vm, d.reach(r.vm.Host, "locate"))
	}
	loc.States[r.vm.Host] = r.vm.State
	if r.vm.State.Active() {
		loc.Host = r.vm.Host
	}
	if m := d.migs[vm]; m != nil && !d.unreachable[m.dst] {
		// While migrating the target holds a paused copy (running in post-copy).
		st := hypervisor.StatePaused
		if m.postcopy {
			st = hypervisor.StateRunning
			loc.Host = m.dst
			loc.States[m.src] = hypervisor.StatePaused
		}
		loc.States[m.dst] = st
	}
	return loc, nil
}

// Migrate implements hypervisor.Driver.
func (d *Driver) Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (hypervisor.Migration, error) {
	d.mu.Lock()
	src := ""
	if r, ok := d.vms[vm]; ok {
		src = r.vm.Host
	}
	d.mu.Unlock()
	hung := d.stall(ctx, "migrate", src, target)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("driver closed")
	}
	r, ok := d.vms[vm]
	if !ok {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrVMNotFound, vm)
	}
	if _, err := d.host(target); err != nil {
		return nil, err
	}
	if err := d.reachOr(hung, r.vm.Host, "migrate"); err != nil {
		return nil, err
	}
	if err := d.reachOr(hung, target, "migrate"); err != nil {
		return nil, err
	}
	if r.vm.Host == target {
		return nil, fmt.Errorf("%w: %s on %s", hypervisor.ErrSameHost, vm, target)
	}
	if d.migs[vm] != nil {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrBusy, vm)
	}
	if !r.vm.State.Active() {
		return nil, fmt.Errorf("%w: %s is %s", hypervisor.ErrVMNotFound, vm, r.vm.State)
	}
	switch opts.Mode {
	case "", model.PreCopy, model.AutoConverge, model.PostCopy:
	default:
		return nil, fmt.Errorf("%w: mode %q", hypervisor.ErrBadOptions, opts.Mode)
	}
	bw := opts.BandwidthMiBps
	if bw <= 0 {
		bw = d.opt.BandwidthMiBps
	}
	if opts.ParallelStreams > 1 {
		bw *= math.Min(float64(opts.ParallelStreams), 4) * 0.9 // streams help, up to a point
	}
	dt := opts.MaxDowntimeMs
	if dt <= 0 {
		dt = d.opt.MaxDowntimeMs
	}
	total := r.vm.MemMiB * (1 << 20)
	m := &mig{src: r.vm.Host, dst: target, bw: bw * (1 << 20), downtime: dt / 1000,
		total: total, remaining: total, passLeft: total}
	m.t = hypervisor.NewTracker(vm, m.src, target, opts, func(ctx context.Context) error { return d.Abort(ctx, vm) })
	d.migs[vm] = m
	m.t.Update(d.progress(vm, m, hypervisor.PhaseRunning))
	return m.t, nil
}

func (d *Driver) progress(vm string, m *mig, ph hypervisor.Phase) hypervisor.Progress {
	return hypervisor.Progress{
		Phase: ph, Time: d.now,
		Elapsed:       time.Duration(m.elapsed * float64(time.Second)),
		DataTotal:     uint64(m.total),
		DataProcessed: uint64(m.sent),
		DataRemaining: uint64(m.remaining),
		MemBps:        m.bw,
		DirtyPagesPS:  d.vms[vm].usage.DirtyMiBps * (1 << 20) / 4096 * (1 - m.throttle),
		PageSize:      4096,
		Iteration:     m.iter,
		Throttle:      int(m.throttle * 100),
	}
}

// Adopt implements hypervisor.Driver: a migration this driver runs is followed
// by the same tracker, as a new controller process finds libvirt's job.
func (d *Driver) Adopt(ctx context.Context, vm, target string) (hypervisor.Migration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.migs[vm]
	if m == nil {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrNoMigration, vm)
	}
	if err := d.reach(m.src, "adopt"); err != nil {
		return nil, err
	}
	if m.dst != target {
		return nil, fmt.Errorf("%w: %s migrates to %s, not %s", hypervisor.ErrNoMigration, vm, m.dst, target)
	}
	return m.t, nil
}

// Abort implements hypervisor.Driver.
func (d *Driver) Abort(ctx context.Context, vm string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.migs[vm]
	if m == nil {
		return fmt.Errorf("%w: %s", hypervisor.ErrNoMigration, vm)
	}
	if err := d.reach(m.src, "abort"); err != nil {
		return err
	}
	if m.postcopy {
		return fmt.Errorf("%w: %s is in post-copy", hypervisor.ErrCannotAbort, vm)
	}
	m.aborted = true // takes effect at the next Advance, as an async job cancel does
	return nil
}

// Advance moves the virtual clock by dt and every migration with it, in steps of at
// most 10 ms of virtual time.
func (d *Driver) Advance(dt time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	const step = 10 * time.Millisecond
	for dt > 0 {
		s := min(dt, step)
		dt -= s
		d.now = d.now.Add(s)
		for _, id := range slices.Sorted(maps.Keys(d.migs)) {
			d.stepMig(id, d.migs[id], s.Seconds())
		}
	}
}

func (d *Driver) stepMig(vm string, m *mig, s float64) {
	r := d.vms[vm]
	finish := func(ph hypervisor.Phase, err error) {
		delete(d.migs, vm)
		p := d.progress(vm, m, ph)
		res := hypervisor.Result{Progress: p}
		if err != nil {
			res.Err = err.Error()
		}
		if ph == hypervisor.PhaseCompleted {
			r.vm.Host = m.dst
			res.Downtime = time.Duration(m.remaining / m.bw * float64(time.Second))
			res.DataRemaining = 0
			res.Verified = true
		}
		res.Where, _ = d.locate(vm)
		res.Wall = time.Duration(m.elapsed * float64(time.Second))
		m.t.Finish(res, err)
	}
	if m.aborted {
		finish(hypervisor.PhaseCancelled, hypervisor.ErrAborted)
		return
	}
	if d.unreachable[m.src] || d.unreachable[m.dst] {
		finish(hypervisor.PhaseFailed, fmt.Errorf("%w: connection to a host lost", hypervisor.ErrMigrateFailed))
		return
	}
	m.elapsed += s
	send := m.bw * s
	m.sent += send
	if m.postcopy {
		// The VM runs on the target; the rest is pulled without new dirtying.
		m.remaining -= send
		if m.remaining <= 0 {
			m.remaining = 0
			finish(hypervisor.PhaseCompleted, nil)
		} else {
			m.t.Update(d.progress(vm, m, hypervisor.PhasePostCopy))
		}
		return
	}
	// Pre-copy: send this pass while the guest dirties pages (capped at its memory).
	dirty := r.usage.DirtyMiBps * (1 << 20) * (1 - m.throttle) * s
	m.passLeft -= send
	m.remaining = math.Min(m.total, math.Max(0, m.remaining-send)+dirty)
	if err := d.failNext[vm]; err != nil && m.sent >= m.total/2 {
		delete(d.failNext, vm)
		finish(hypervisor.PhaseFailed, fmt.Errorf("%w: %w", hypervisor.ErrMigrateFailed, err))
		return
	}
	if m.passLeft <= 0 {
		m.iter++
		m.passLeft = m.remaining
		mode := m.t.Options().Mode
		if mode == model.PostCopy {
			m.postcopy = true
			r.vm.Host = m.dst // the VM now runs on the target
			m.t.Update(d.progress(vm, m, hypervisor.PhasePostCopy))
			return
		}
		if mode == model.AutoConverge && m.iter >= 2 {
			m.throttle = math.Min(0.99, m.throttle+0.2)
		}
	}
	if m.remaining <= m.bw*m.downtime {
		finish(hypervisor.PhaseCompleted, nil)
		return
	}
	m.t.Update(d.progress(vm, m, hypervisor.PhaseRunning))
}

// Close implements hypervisor.Driver.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		close(d.stop)
	}
	return nil
}

var _ hypervisor.Driver = (*Driver)(nil)
