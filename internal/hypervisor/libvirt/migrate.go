package libvirt

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// plan is a migration's flags and typed parameters, worked out from the options.
type plan struct {
	flags       lv.DomainMigrateFlags
	params      []lv.TypedParam
	postcopy    bool   // switch to post-copy after the first pass
	maxDowntime uint64 // ms, 0: the hypervisor's default
}

var compressionMethods = map[string]bool{"xbzrle": true, "mt": true, "zlib": true, "zstd": true}

// planFor translates StateTransferOptions into libvirt's terms. persistent says
// whether the domain has a definition on the source, which then moves with it.
func planFor(opts model.StateTransferOptions, migrateURI string, persistent bool) (plan, error) {
	p := plan{flags: lv.MigrateLive | lv.MigratePeer2peer | lv.MigrateAbortOnError}
	if persistent {
		// The definition follows the VM, so the target owns it afterwards and the
		// source cannot start a stale copy.
		p.flags |= lv.MigratePersistDest | lv.MigrateUndefineSource
	}
	str := func(k, v string) {
		p.params = append(p.params, lv.TypedParam{Field: k, Value: *lv.NewTypedParamValueString(v)})
	}
	if opts.MigrateURI != "" {
		migrateURI = opts.MigrateURI
	}
	if migrateURI == "" {
		return p, fmt.Errorf("%w: no migrate URI for the target", hypervisor.ErrBadOptions)
	}
	str(lv.MigrateParamURI, migrateURI)

	switch opts.Mode {
	case "", model.PreCopy:
	case model.AutoConverge:
		p.flags |= lv.MigrateAutoConverge
	case model.PostCopy:
		p.flags |= lv.MigratePostcopy
		p.postcopy = true
	default:
		return p, fmt.Errorf("%w: mode %q", hypervisor.ErrBadOptions, opts.Mode)
	}
	if bw := opts.BandwidthMiBps; bw > 0 {
		v := *lv.NewTypedParamValueUllong(uint64(math.Ceil(bw)))
		p.params = append(p.params, lv.TypedParam{Field: lv.MigrateParamBandwidth, Value: v})
		if p.postcopy {
			// QEMU's max-bandwidth binds pre-copy only; without this the pages
			// pulled after the switch would take the whole link.
			p.params = append(p.params, lv.TypedParam{Field: lv.MigrateParamBandwidthPostcopy, Value: v})
		}
	} else if bw < 0 {
		return p, fmt.Errorf("%w: bandwidth %v", hypervisor.ErrBadOptions, bw)
	}
	if n := opts.ParallelStreams; n > 1 {
		p.flags |= lv.MigrateParallel
		p.params = append(p.params, lv.TypedParam{Field: lv.MigrateParamParallelConnections,
			Value: *lv.NewTypedParamValueInt(int32(n))})
	}
	if c := strings.TrimSpace(opts.Compression); c != "" && c != "none" {
		for m := range strings.SplitSeq(c, ",") {
			m = strings.TrimSpace(m)
			if !compressionMethods[m] {
				return p, fmt.Errorf("%w: compression %q (want xbzrle, mt, zlib or zstd)", hypervisor.ErrBadOptions, m)
			}
			if (m == "zlib" || m == "zstd") && opts.ParallelStreams < 2 {
				return p, fmt.Errorf("%w: %s compression needs parallel streams", hypervisor.ErrBadOptions, m)
			}
			str(lv.MigrateParamCompression, m)
		}
		p.flags |= lv.MigrateCompressed
	}
	if ms := opts.MaxDowntimeMs; ms > 0 {
		p.maxDowntime = uint64(math.Ceil(ms))
	} else if ms < 0 {
		return p, fmt.Errorf("%w: max downtime %v", hypervisor.ErrBadOptions, ms)
	}
	return p, nil
}

// migration is one migration this driver started.
type migration struct {
	*hypervisor.Tracker
	d        *Driver
	src, dst *host
	dom      lv.Domain

	// adopted: another process started it (see Adopt); no migrate call of ours
	// says when it ends, the job's disappearance does.
	adopted bool

	mu        sync.Mutex
	aborted   bool
	postcopy  bool // switched
	downtimeN bool // max downtime still to be set once the job runs
}

// Migrate implements hypervisor.Driver.
func (d *Driver) Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (hypervisor.Migration, error) {
	dst, err := d.host(target)
	if err != nil {
		return nil, err
	}
	if dst.cfg.PeerURI == "" || strings.HasPrefix(dst.cfg.PeerURI, "qemu+unix") || strings.HasPrefix(dst.cfg.PeerURI, "qemu:///") {
		return nil, fmt.Errorf("%w: host %s has no network URI other hosts can reach (set PeerURI)", hypervisor.ErrBadOptions, target)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("driver closed")
	}
	if d.migs[vm] != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrBusy, vm)
	}
	d.migs[vm] = &migration{} // reserve the VM while we set up
	d.mu.Unlock()
	m, err := d.startMigration(ctx, vm, dst, opts)
	return d.settle(vm, m, err)
}

// settle replaces vm's reservation in d.migs with m, or drops it on err.
func (d *Driver) settle(vm string, m *migration, err error) (hypervisor.Migration, error) {
	d.mu.Lock()
	if err != nil {
		delete(d.migs, vm)
	} else {
		d.migs[vm] = m
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (d *Driver) startMigration(ctx context.Context, vm string, dst *host, opts model.StateTransferOptions) (*migration, error) {
	loc, errs, err := d.locate(ctx, vm)
	if loc.Host == "" {
		if err == nil {
			err = fmt.Errorf("%w: %s runs nowhere", hypervisor.ErrVMNotFound, vm)
		}
		return nil, err
	}
	for i, h := range d.hosts {
		if h == dst && errs[i] != nil {
			return nil, errs[i]
		}
	}
	if loc.Host == dst.cfg.ID {
		return nil, fmt.Errorf("%w: %s on %s", hypervisor.ErrSameHost, vm, dst.cfg.ID)
	}
	src, _ := d.host(loc.Host)

	var dom lv.Domain
	var persistent bool
	err = src.call(ctx, "prepare migration", func(c *lv.Libvirt) error {
		var err error
		if dom, err = c.DomainLookupByName(vm); err != nil {
			return err
		}
		typ, _, err := c.DomainGetJobStats(dom, 0)
		if err != nil {
			return err
		}
		if lv.DomainJobType(typ) == lv.DomainJobBounded || lv.DomainJobType(typ) == lv.DomainJobUnbounded {
			return fmt.Errorf("%w: %s has a job running on %s", hypervisor.ErrBusy, vm, src.cfg.ID)
		}
		p, err := c.DomainIsPersistent(dom)
		persistent = p == 1
		return err
	})
	if err != nil {
		return nil, unwrapBusy(err)
	}
	p, err := planFor(opts, dst.cfg.MigrateURI, persistent)
	if err != nil {
		return nil, err
	}
	m := &migration{d: d, src: src, dst: dst, dom: dom}
	if p.maxDowntime > 0 {
		// Set on the domain before the job: libvirt keeps QEMU's downtime limit for
		// the next migration. If that is refused, retry once the job runs.
		err := src.call(ctx, "set max downtime", func(c *lv.Libvirt) error {
			return c.DomainMigrateSetMaxDowntime(dom, p.maxDowntime, 0)
		})
		m.downtimeN = err != nil
	}

	// The migrate call blocks until the end, so it gets a connection of its own.
	mc, mnc, err := d.dial(ctx, src.cfg.URI)
	if err != nil {
		return nil, src.err("connect for migration", err)
	}
	m.Tracker = hypervisor.NewTracker(vm, src.cfg.ID, dst.cfg.ID, opts, func(ctx context.Context) error {
		return d.Abort(ctx, vm)
	})
	performed := make(chan error, 1)
	go func() {
		_, err := mc.DomainMigratePerform3Params(dom, lv.OptString{dst.cfg.PeerURI}, p.params, nil, p.flags)
		mc.Disconnect()
		mnc.Close()
		performed <- err
	}()
	go m.watch(performed, p)
	return m, nil
}

func unwrapBusy(err error) error {
	if errors.Is(err, hypervisor.ErrBusy) {
		var he *hypervisor.HostError
		if errors.As(err, &he) {
			return he.Err
		}
	}
	return err
}

// progressOf reads job stats into a Progress.
func progressOf(typ int32, params []lv.TypedParam) hypervisor.Progress {
	p := hypervisor.Progress{Time: time.Now()}
	switch lv.DomainJobType(typ) {
	case lv.DomainJobBounded, lv.DomainJobUnbounded:
		p.Phase = hypervisor.PhaseRunning
	case lv.DomainJobCompleted:
		p.Phase = hypervisor.PhaseCompleted
	case lv.DomainJobFailed:
		p.Phase = hypervisor.PhaseFailed
	case lv.DomainJobCancelled:
		p.Phase = hypervisor.PhaseCancelled
	default:
		p.Phase = hypervisor.PhaseStarting
	}
	ms := func(v lv.TypedParamValue) time.Duration { return time.Duration(unum(v)) * time.Millisecond }
	for _, tp := range params {
		switch tp.Field {
		case lv.DomainJobTimeElapsed:
			p.Elapsed = ms(tp.Value)
		case lv.DomainJobDataTotal:
			p.DataTotal = unum(tp.Value)
		case lv.DomainJobDataProcessed:
			p.DataProcessed = unum(tp.Value)
		case lv.DomainJobDataRemaining:
			p.DataRemaining = unum(tp.Value)
		case lv.DomainJobMemoryBps:
			p.MemBps = float64(unum(tp.Value))
		case lv.DomainJobMemoryDirtyRate:
			p.DirtyPagesPS = float64(unum(tp.Value))
		case lv.DomainJobMemoryPageSize:
			p.PageSize = unum(tp.Value)
		case lv.DomainJobMemoryIteration:
			p.Iteration = int(unum(tp.Value))
		case lv.DomainJobAutoConvergeThrottle:
			p.Throttle = int(unum(tp.Value))
		case lv.DomainJobMemoryPostcopyReqs:
			p.PostcopyReqs = unum(tp.Value)
		case lv.DomainJobDowntime:
			p.Downtime = ms(tp.Value)
		case lv.DomainJobSetupTime:
			p.Setup = ms(tp.Value)
		case lv.DomainJobErrmsg:
			if s, ok := tp.Value.I.(string); ok {
				p.Err = s
			}
		}
	}
	return p
}

// Adopt implements hypervisor.Driver. The job is found on the host where vm is
// active, other than target, with a migration running out; its progress is
// polled until the job is gone, then it ends as a migration this driver
// started does, verified by where the VM is.
func (d *Driver) Adopt(ctx context.Context, vm, target string) (hypervisor.Migration, error) {
	dst, err := d.host(target)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("driver closed")
	}
	if m := d.migs[vm]; m != nil {
		d.mu.Unlock()
		if m.Tracker != nil && m.dst == dst {
			return m, nil // ours already
		}
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrBusy, vm)
	}
	d.migs[vm] = &migration{}
	d.mu.Unlock()
	m, err := d.adopt(ctx, vm, dst)
	return d.settle(vm, m, err)
}

func (d *Driver) adopt(ctx context.Context, vm string, dst *host) (*migration, error) {
	loc, errs, lerr := d.locate(ctx, vm)
	for i, h := range d.hosts {
		if h == dst || errs[i] != nil || !loc.States[h.cfg.ID].Active() {
			continue
		}
		var dom lv.Domain
		var pr hypervisor.Progress
		running := false
		err := h.call(ctx, "job stats", func(c *lv.Libvirt) error {
			var err error
			if dom, err = c.DomainLookupByName(vm); err != nil {
				return err
			}
			typ, params, err := c.DomainGetJobStats(dom, 0)
			if err != nil {
				return err
			}
			pr = progressOf(typ, params)
			running = pr.Phase == hypervisor.PhaseRunning
			for _, tp := range params {
				if tp.Field == lv.DomainJobOperationStr {
					op, _ := num(tp.Value)
					running = running && lv.DomainJobOperation(op) == lv.DomainJobOperationStrMigrationOut
				}
			}
			return nil
		})
		if err != nil {
			if lv.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		if !running {
			continue
		}
		m := &migration{d: d, src: h, dst: dst, dom: dom, adopted: true}
		// Running on the target already: post-copy, which cannot be aborted.
		m.postcopy = loc.Host == dst.cfg.ID
		m.Tracker = hypervisor.NewTracker(vm, h.cfg.ID, dst.cfg.ID, model.StateTransferOptions{}, func(ctx context.Context) error {
			return d.Abort(ctx, vm)
		})
		m.Update(pr)
		go m.watch(nil, plan{})
		return m, nil
	}
	if loc.Host == "" && lerr != nil {
		return nil, lerr // a silent host may run it, and its job
	}
	return nil, fmt.Errorf("%w: %s runs no migration job (states %v)", hypervisor.ErrNoMigration, vm, loc.States)
}

// watch polls the job until the migrate call returns (for an adopted job: until
// the job is gone), switches to post-copy when asked, then reads the final
// statistics and checks where the VM ended up.
func (m *migration) watch(performed <-chan error, p plan) {
	d := m.d
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	var perr error
	var last hypervisor.Progress
	var prep dataStart
	var silentSince time.Time // an adopted job's source has not answered since
poll:
	for {
		select {
		case perr = <-performed:
			break poll
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CallTimeout)
		var pr hypervisor.Progress
		err := m.src.call(ctx, "job stats", func(c *lv.Libvirt) error {
			typ, params, err := c.DomainGetJobStats(m.dom, 0)
			if err != nil {
				return err
			}
			pr = progressOf(typ, params)
			return nil
		})
		if m.adopted {
			switch {
			case err == nil && pr.Phase != hypervisor.PhaseRunning, lv.IsNotFound(err):
				cancel()
				break poll // the job is over (the domain is gone from a source it left)
			case err != nil && silentSince.IsZero():
				silentSince = time.Now()
			case err != nil && time.Since(silentSince) > d.cfg.CallTimeout:
				cancel()
				perr = fmt.Errorf("lost the source %s while following the job: %w", m.src.cfg.ID, err)
				break poll
			case err == nil:
				silentSince = time.Time{}
			}
		}
		if err != nil || pr.Phase != hypervisor.PhaseRunning {
			cancel()
			continue // not started yet, or just ended: the migrate call will say
		}
		m.mu.Lock()
		setDowntime := m.downtimeN
		m.downtimeN = false
		switchPC := p.postcopy && !m.postcopy && !m.aborted && pr.Iteration >= 2
		if switchPC {
			m.postcopy = true
		}
		pc := m.postcopy
		m.mu.Unlock()
		if setDowntime {
			m.src.call(ctx, "set max downtime", func(c *lv.Libvirt) error {
				return c.DomainMigrateSetMaxDowntime(m.dom, p.maxDowntime, 0)
			})
		}
		if switchPC {
			// The first pass is done: the rest moves on demand from the target,
			// which bounds the migration's length whatever the dirty rate.
			if err := m.src.call(ctx, "start post-copy", func(c *lv.Libvirt) error {
				return c.DomainMigrateStartPostCopy(m.dom, 0)
			}); err != nil {
				pr.Err = "start post-copy: " + err.Error()
			}
		}
		cancel()
		if pc {
			pr.Phase = hypervisor.PhasePostCopy
		}
		prep.see(pr)
		last = pr
		m.Update(pr)
	}
	m.finish(perr, last, prep.at())
}

// dataStart finds when data started to move on the job clock. libvirt's job
// runs a while before QEMU sends a page (starting QEMU on the target: a second
// in the lab), which QEMU's own setup time leaves out; a rate worked out over
// the whole job would count it as transfer.
type dataStart struct {
	idle      time.Duration // the last sample with no data sent
	first     hypervisor.Progress
	seenFirst bool
}

func (s *dataStart) see(p hypervisor.Progress) {
	switch {
	case s.seenFirst:
	case p.DataProcessed == 0:
		s.idle = p.Elapsed
	default:
		s.first, s.seenFirst = p, true
	}
}

// at is the estimate, 0 if unknown: back from the first sample with data at its
// rate, within the polling interval before it.
func (s *dataStart) at() time.Duration {
	if !s.seenFirst {
		return 0
	}
	t := s.idle + (s.first.Elapsed-s.idle)/2
	if s.first.MemBps > 0 {
		t = s.first.Elapsed - time.Duration(float64(s.first.DataProcessed)/s.first.MemBps*float64(time.Second))
	}
	return min(max(t, s.idle), s.first.Elapsed)
}

func (m *migration) finish(perr error, last hypervisor.Progress, dataAt time.Duration) {
	d := m.d
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CallTimeout)
	defer cancel()
	res := hypervisor.Result{Progress: last}
	// Completed stats: the target keeps them for the incoming side (the source
	// domain is gone once undefined); fall back to the source.
	for _, h := range []*host{m.dst, m.src} {
		var pr hypervisor.Progress
		err := h.call(ctx, "completed job stats", func(c *lv.Libvirt) error {
			dom, err := c.DomainLookupByName(m.VM())
			if err != nil {
				return err
			}
			typ, params, err := c.DomainGetJobStats(dom, lv.DomainJobStatsCompleted)
			if err != nil {
				return err
			}
			pr = progressOf(typ, params)
			return nil
		})
		if err == nil && pr.Phase != hypervisor.PhaseStarting { // type None: no stats kept
			res.Progress = pr
			break
		}
	}
	if m.adopted && perr == nil {
		perr = m.adoptedOutcome(ctx, res.Progress)
	}
	m.mu.Lock()
	aborted := m.aborted
	switched := m.postcopy
	m.mu.Unlock()
	if perr != nil && !switched {
		// No switch-over, no downtime: a failed job's stats may carry the
		// downtime limit, which the VM never paid.
		res.Downtime = 0
	}

	var err error
	switch {
	case perr == nil:
		res.Phase = hypervisor.PhaseCompleted
	case aborted || isCode(perr, lv.ErrOperationAborted):
		res.Phase = hypervisor.PhaseCancelled
		err = fmt.Errorf("%w: %v", hypervisor.ErrAborted, perr)
	default:
		res.Phase = hypervisor.PhaseFailed
		err = fmt.Errorf("%w: %v", hypervisor.ErrMigrateFailed, perr)
	}
	if perr != nil {
		res.Err = perr.Error()
	}
	loc, lerr := d.Locate(ctx, m.VM())
	res.Where = loc
	if perr == nil {
		// Verified: running on the target, and the source says it no longer runs
		// there. Other hosts being silent does not matter: the VM runs on one host.
		res.Verified = lerr == nil && loc.Host == m.dst.cfg.ID && !loc.States[m.src.cfg.ID].Active() &&
			!slices.Contains(loc.Unreachable, m.src.cfg.ID)
		if !res.Verified {
			err = fmt.Errorf("%w: %s is at %q, states %v, not asked %v (%v)", hypervisor.ErrNotVerified, m.VM(), loc.Host, loc.States, loc.Unreachable, lerr)
		}
	}
	// Setup is all the job's time before data moved, QEMU's setup included.
	if dataAt > res.Setup && dataAt < res.Elapsed {
		res.Setup = dataAt
	}
	res.DataRemaining = 0
	if res.Phase != hypervisor.PhaseCompleted {
		res.DataRemaining = last.DataRemaining
	}
	d.mu.Lock()
	if d.migs[m.VM()] == m {
		delete(d.migs, m.VM())
	}
	d.mu.Unlock()
	m.Finish(res, err)
}

// adoptedOutcome is what the migrate call would have returned for an adopted
// job that is over: nil if it completed, else why not. The completed job's
// statistics say it when libvirt kept them; otherwise where the VM is does.
func (m *migration) adoptedOutcome(ctx context.Context, final hypervisor.Progress) error {
	switch final.Phase {
	case hypervisor.PhaseCompleted:
		return nil
	case hypervisor.PhaseCancelled:
		m.mu.Lock()
		m.aborted = true
		m.mu.Unlock()
		return fmt.Errorf("the job was cancelled: %s", final.Err)
	case hypervisor.PhaseFailed:
		if final.Err == "" {
			final.Err = "no reason kept"
		}
		return fmt.Errorf("the job failed: %s", final.Err)
	}
	loc, err := m.d.Locate(ctx, m.VM())
	if err == nil && loc.Host == m.dst.cfg.ID {
		return nil
	}
	return fmt.Errorf("the job ended with %s at %q (states %v)", m.VM(), loc.Host, loc.States)
}

func isCode(err error, code lv.ErrorNumber) bool {
	var e lv.Error
	return errors.As(err, &e) && e.Code == uint32(code)
}

// Abort implements hypervisor.Driver: it cancels the job on whichever host runs the
// VM, so it also works for migrations another process started.
func (d *Driver) Abort(ctx context.Context, vm string) error {
	d.mu.Lock()
	m := d.migs[vm]
	d.mu.Unlock()
	var src *host
	if m != nil && m.Tracker != nil {
		m.mu.Lock()
		if m.postcopy {
			m.mu.Unlock()
			return fmt.Errorf("%w: %s is in post-copy", hypervisor.ErrCannotAbort, vm)
		}
		m.aborted = true
		m.mu.Unlock()
		src = m.src
	} else {
		loc, err := d.Locate(ctx, vm)
		if loc.Host == "" {
			if err == nil {
				err = fmt.Errorf("%w: %s", hypervisor.ErrVMNotFound, vm)
			}
			return err
		}
		src, _ = d.host(loc.Host)
	}
	abort := func() error {
		return src.call(ctx, "abort", func(c *lv.Libvirt) error {
			dom, err := c.DomainLookupByName(vm)
			if err != nil {
				return err
			}
			typ, _, err := c.DomainGetJobStats(dom, 0)
			if err != nil {
				return err
			}
			if t := lv.DomainJobType(typ); t != lv.DomainJobBounded && t != lv.DomainJobUnbounded {
				return hypervisor.ErrNoMigration
			}
			return c.DomainAbortJob(dom)
		})
	}
	err := abort()
	// Our own migration may not have its job yet (just started): wait for it.
	for deadline := time.Now().Add(5 * time.Second); m != nil && m.Tracker != nil &&
		errors.Is(err, hypervisor.ErrNoMigration) && time.Now().Before(deadline); {
		select {
		case <-m.Done():
			return fmt.Errorf("%w: %s finished", hypervisor.ErrNoMigration, vm)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		err = abort()
	}
	if errors.Is(err, hypervisor.ErrNoMigration) {
		return fmt.Errorf("%w: %s", hypervisor.ErrNoMigration, vm)
	}
	if err != nil && (isCode(err, lv.ErrOperationInvalid) || isCode(err, lv.ErrOperationUnsupported)) {
		return fmt.Errorf("%w: %v", hypervisor.ErrCannotAbort, err)
	}
	return err
}
