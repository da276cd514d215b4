package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
	"github.com/headroom/headroom/internal/transfer"
)

// reading is one cycle's view of the cluster: the hosts that answered every read
// within the collection deadline, with their VMs and stats. A host missing from
// any read is left out of all of them: listed but silent, it would look empty
// and draw moves it cannot take.
type reading struct {
	up    []hypervisor.Host
	vms   []hypervisor.VM
	stats hypervisor.Stats
	down  map[string]error // the hosts left out, and why
}

// read lists the hosts and VMs and samples their stats, the three calls at once
// under one deadline (CollectTimeout), so a silent host costs the deadline once
// per cycle, not once per call. Hosts that failed are logged, one event each,
// and left out; an error that names no host ends the cycle.
func (c *Controller) read(ctx context.Context) (reading, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.CollectTimeout)
	defer cancel()
	var (
		wg               sync.WaitGroup
		hosts            []hypervisor.Host
		vms              []hypervisor.VM
		stats            hypervisor.Stats
		herr, verr, serr error
		t0               = time.Now()
	)
	wg.Add(3)
	go func() { defer wg.Done(); hosts, herr = c.drv.Hosts(rctx) }()
	go func() { defer wg.Done(); vms, verr = c.drv.VMs(rctx) }()
	go func() { defer wg.Done(); stats, serr = c.drv.Stats(rctx) }()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return reading{}, err // the caller gave up: no host is to blame
	}

	r := reading{down: map[string]error{}}
	var rest []error
	for _, err := range []error{herr, verr, serr} {
		for _, e := range unjoin(err) {
			var he *hypervisor.HostError
			switch {
			case e == nil:
			case errors.As(e, &he):
				if r.down[he.Host] == nil {
					r.down[he.Host] = he
				}
			default:
				rest = append(rest, e)
			}
		}
	}
	if err := errors.Join(rest...); err != nil {
		return r, err
	}
	for _, h := range hosts {
		if h.Err != "" && r.down[h.ID] == nil {
			r.down[h.ID] = errors.New(h.Err)
		}
	}
	if len(r.down) == 0 {
		// Every host answered: the reads are the reading, without a copy of
		// each (at 100,000 VMs a copy is tens of MB a cycle).
		r.up, r.vms, r.stats = hosts, vms, stats
	} else {
		r.up = keep(hosts, func(h hypervisor.Host) bool { return r.down[h.ID] == nil })
		r.vms = keep(vms, func(v hypervisor.VM) bool { return r.down[v.Host] == nil })
		r.stats = hypervisor.Stats{Time: stats.Time,
			Hosts: keep(stats.Hosts, func(hs hypervisor.HostStats) bool { return r.down[hs.Host] == nil }),
			VMs:   keep(stats.VMs, func(vs hypervisor.VMStats) bool { return r.down[vs.Host] == nil })}
	}
	took := time.Since(t0).Round(time.Millisecond)
	// One write for all of them: a rack that goes dark is hundreds of hosts.
	ev := &eventBatch{c: c}
	for _, id := range slices.Sorted(maps.Keys(r.down)) {
		err := r.down[id]
		msg := "host unreachable; left out of this cycle"
		if errors.Is(err, context.DeadlineExceeded) || (rctx.Err() != nil && strings.Contains(err.Error(), "timeout")) {
			msg = fmt.Sprintf("no answer within the %v collection deadline (%v); left out of this cycle", c.cfg.CollectTimeout, took)
		}
		ev.add(store.Event{Kind: store.Failure, Host: id, Error: err.Error(), Message: msg})
	}
	ev.flush()
	c.observeHosts(r)
	return r, nil
}

// keep is the elements of xs that ok accepts, in a new slice (nil if none):
// xs is the driver's, and stays as it was.
func keep[T any](xs []T, ok func(T) bool) []T {
	n := 0
	for _, x := range xs {
		if ok(x) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]T, 0, n)
	for _, x := range xs {
		if ok(x) {
			out = append(out, x)
		}
	}
	return out
}

// hostHealth is what the controller knows of a host as a migration target.
type hostHealth struct {
	silent bool // it did not answer the last cycle's reads
	// failures counts the migrations in a row to it that failed with a
	// connection error; aside is when it may be a target again, and why not.
	failures int
	aside    time.Time
	why      string
}

// observeHosts updates each host's health from a cycle's reads, logging the
// changes: a host that stops answering is set aside as a target until it
// answers again.
func (c *Controller) observeHosts(r reading) {
	var es []store.Event
	c.mu.Lock()
	for _, id := range slices.Sorted(maps.Keys(r.down)) {
		if h := c.health(id); !h.silent {
			h.silent = true
			es = append(es, store.Event{Kind: store.HostState, Host: id, State: "down", Error: r.down[id].Error(),
				Message: "not a migration target until it answers again"})
		}
	}
	for _, x := range r.up {
		h := c.hosts[x.ID]
		if h == nil || !h.silent {
			continue
		}
		h.silent = false
		msg := "answers again; a migration target again"
		if now := c.now(); now.Before(h.aside) {
			msg = fmt.Sprintf("answers again; a migration target again after %s (%s)", h.aside.Format(time.TimeOnly), h.why)
		}
		es = append(es, store.Event{Kind: store.HostState, Host: x.ID, State: "up", Message: msg})
	}
	c.mu.Unlock()
	ev := &eventBatch{c: c}
	for _, e := range es {
		ev.add(e)
	}
	ev.flush()
}

// health returns host id's record, creating it; c.mu must be held.
func (c *Controller) health(id string) *hostHealth {
	h := c.hosts[id]
	if h == nil {
		h = &hostHealth{}
		c.hosts[id] = h
	}
	return h
}

// hostAfterMove updates the target's health: a move that failed with a
// connection error sets it aside for HostCooldown, doubled with each such
// failure in a row, and returns the event that says so; one that completed
// clears its count. c.mu must be held.
func (c *Controller) hostAfterMove(target string, completed bool, err error) *store.Event {
	h := c.health(target)
	if completed {
		h.failures = 0
		return nil
	}
	if !hypervisor.IsConnectionError(err) {
		return nil
	}
	h.failures++
	d := c.cfg.HostCooldown << min(h.failures-1, 5)
	h.aside = c.now().Add(d)
	h.why = "a migration to it failed with a connection error"
	return &store.Event{Kind: store.HostState, Host: target, State: "aside", Error: err.Error(),
		Message: fmt.Sprintf("not a migration target for %v (connection failure %d in a row)", d, h.failures)}
}

// vmFailures is a VM's run of failed moves.
type vmFailures struct {
	n     int
	until time.Time // no move before
	last  string    // why the last one failed
}

// vmAfterMove counts a VM's failed moves and sets its backoff: none after the
// first (the next cycle retries, off any host set aside), then FailureBackoff
// doubling with each further failure, up to 32 times. A completed move clears
// the count. c.mu must be held.
func (c *Controller) vmAfterMove(vm string, completed bool, why string) {
	if completed {
		delete(c.failures, vm)
		return
	}
	f := c.failures[vm]
	if f == nil {
		f = &vmFailures{}
		c.failures[vm] = f
	}
	f.n++
	f.last = why
	if f.n >= 2 {
		f.until = c.now().Add(c.cfg.FailureBackoff << min(f.n-2, 5))
	}
}

// guards are the rules the controller adds to a cycle's own, so that the core
// plans around what it knows and the core does not: a host set aside gets a must
// host-anti-affinity rule for every VM not already on it (they may stay, none may
// come), and a VM backing off after failures, or whose last migration is not
// settled, a must host-affinity rule to where it is.
func (c *Controller) guards(snap *model.Snapshot) []model.Rule {
	now := c.now()
	c.mu.Lock()
	var aside []string
	for id, h := range c.hosts {
		if now.Before(h.aside) {
			aside = append(aside, id)
		}
	}
	pinned := map[string]string{}
	for vm, f := range c.failures {
		if now.Before(f.until) {
			pinned[vm] = fmt.Sprintf("backoff: %d failed moves in a row; next try after %s", f.n, f.until.Format(time.TimeOnly))
		}
	}
	for vm := range c.unsettled {
		pinned[vm] = "unsettled: its last migration's outcome is not known yet"
	}
	c.mu.Unlock()
	sort.Strings(aside)
	var out []model.Rule
	for _, id := range aside {
		hi := slices.IndexFunc(snap.Hosts, func(h model.Host) bool { return h.ID == id })
		if hi < 0 {
			continue
		}
		var vms []string
		for _, v := range snap.VMs {
			if v.Host != hi && !slices.Contains(v.MigratingTo, hi) {
				vms = append(vms, v.ID)
			}
		}
		if len(vms) > 0 {
			out = append(out, model.Rule{Name: "aside:" + id, Kind: model.HostAntiAffinity, Must: true, VMs: vms, Hosts: []string{id}})
		}
	}
	for _, v := range snap.VMs {
		why, ok := pinned[v.ID]
		if !ok || v.Host < 0 {
			continue
		}
		name, _, _ := strings.Cut(why, ":")
		out = append(out, model.Rule{Name: name + ":" + v.ID, Kind: model.HostAffinity, Must: true, VMs: []string{v.ID},
			Hosts: []string{snap.Hosts[v.Host].ID}})
	}
	return out
}

// slowestLinks is, for each of hosts, the slowest learned link from it to any
// other of them (the first in host order among equals), the prior where a pair
// was never learned. Only learned pairs can differ from the prior, so it walks
// those and one unlearned target per host: O(hosts + learned pairs), where
// asking every pair was O(hosts²), 10⁸ lookups a cycle at 10,000 hosts.
func (c *Controller) slowestLinks(hosts []model.Host) []transfer.Link {
	slowest := make([]transfer.Link, len(hosts))
	if len(hosts) < 2 {
		return slowest
	}
	byID := make(map[string][]int, len(hosts))
	for i, h := range hosts {
		byID[h.ID] = append(byID[h.ID], i)
	}
	learned := map[int][]int{} // source index: the target indices of its learned pairs
	for _, p := range c.links.Pairs() {
		for _, s := range byID[p.Source] {
			for _, t := range byID[p.Target] {
				if s != t {
					learned[s] = append(learned[s], t)
				}
			}
		}
	}
	for s, src := range hosts {
		ts := learned[s]
		slices.Sort(ts)
		// The first target not learned stands for all of them: they all give
		// the prior, and a later equal one would not replace it.
		first, k := 0, 0
		for ; first < len(hosts); first++ {
			for k < len(ts) && ts[k] < first {
				k++
			}
			if first != s && (k == len(ts) || ts[k] != first) {
				break
			}
		}
		if first < len(hosts) {
			i, _ := slices.BinarySearch(ts, first)
			ts = slices.Insert(slices.Clip(ts), i, first)
		}
		for _, t := range slices.Compact(ts) {
			l := c.links.Link(transfer.Pair{Source: src.ID, Target: hosts[t].ID})
			if slowest[s].MiBps == 0 || l.MiBps < slowest[s].MiBps {
				slowest[s] = l
			}
		}
	}
	return slowest
}

// eventBatch gathers events that gate nothing until written together in one
// transaction (store.AppendAll): a cycle's decisions and skips cost one disk
// flush, not one each. Each is stamped as record stamps it, when it is added.
// Flush before any step an added event must precede.
type eventBatch struct {
	c   *Controller
	es  []store.Event
	err error // the first failed write of the cycle
}

func (b *eventBatch) add(e store.Event) {
	if e.Mode == "" {
		e.Mode = string(b.c.currentMode())
	}
	if e.Time.IsZero() {
		e.Time = b.c.now()
	}
	b.es = append(b.es, e)
}

// flush writes the events gathered so far.
func (b *eventBatch) flush() error {
	if b.err != nil || len(b.es) == 0 {
		return b.err
	}
	err := b.write()
	if err != nil {
		eventLogErrors.Add(uint64(len(b.es))) // view.go
		fmt.Printf("headroom: event log: %d events not written: %v\n", len(b.es), err)
		// Sticky: every decision of this cycle was in the lost batch, so no
		// move of the cycle may start.
		b.err = err
	}
	b.es = b.es[:0]
	return err
}

func (b *eventBatch) write() error {
	if b.c.appendHook == nil {
		_, err := b.c.log.AppendAll(b.es)
		return err
	}
	for _, e := range b.es {
		if _, err := b.c.appendHook(e); err != nil {
			return err
		}
	}
	return nil
}

// gate writes what is gathered before a step that needs it on disk, and says
// which step was skipped when it could not be.
func (b *eventBatch) gate(vm, step string) bool {
	err := b.flush()
	if err != nil {
		fmt.Printf("headroom: %s of %s skipped: its decision could not be written to the event log (%v); retried next cycle\n", step, vm, err)
	}
	return err == nil
}

// observe feeds a cycle's samples to the forecast engines and returns the
// decision core's forecasts, one per snapshot VM (nil for a policy that does
// not forecast). The VMs are split among GOMAXPROCS workers (the engines are
// safe for concurrent use, one lock per VM, and each VM's series depend on its
// own samples only, so the split changes no result), and each worker's samples
// go in as one batch (forecast.Engine.ObserveBatch), which overlaps the cache
// misses of 100,000 VMs' state with the arithmetic.
func (c *Controller) observe(snap *model.Snapshot, stats hypervisor.Stats) []model.ResourceForecast {
	fp, forecasting := c.pol.(core.Forecasting)
	var forecasts []model.ResourceForecast
	var steps int
	var conf float64
	if forecasting {
		forecasts = make([]model.ResourceForecast, len(snap.VMs))
		steps, conf = fp.HorizonSteps(snap.Interval), fp.Confidence()
	}
	// The dirty rate of each VM where the snapshot has it: a migration target's
	// incoming copy measures nothing. The map keeps the last sample of each VM
	// on each host: its rate, and whether it has an interval (not the whole
	// sample: 100,000 of them are 20 MB).
	type onHost struct{ vm, host string }
	type dirtyRate struct {
		mibps float64
		rated bool
	}
	measured := make(map[onHost]dirtyRate, len(stats.VMs))
	for _, vs := range stats.VMs {
		measured[onHost{vs.VM, vs.Host}] = dirtyRate{vs.DirtyMiBps, vs.Interval > 0}
	}
	// The interval's samples are one batch of the engine's: its parts learn
	// the fleet's prior together (Learn) before any VM forecasts, so forecasts
	// do not depend on which part finished first.
	var mu sync.Mutex
	var parts []*forecast.Errors
	var vms []*forecast.VM
	if forecasting {
		vms = make([]*forecast.VM, len(snap.VMs))
	}
	inParallel(len(snap.VMs), func(lo, hi int) {
		if forecasting {
			var rated []*forecast.VM
			var demand []model.Resources
			for i := lo; i < hi; i++ {
				vms[i] = c.eng.VM(snap.VMs[i].ID)
				if len(snap.VMs[i].History) > 0 { // a sample with a rate behind it
					rated = append(rated, vms[i])
					demand = append(demand, snap.VMs[i].Demand)
				}
			}
			errs := new(forecast.Errors)
			c.eng.ObserveInto(errs, rated, demand)
			mu.Lock()
			parts = append(parts, errs)
			mu.Unlock()
		}
		for _, v := range snap.VMs[lo:hi] {
			if v.Host < 0 {
				continue
			}
			if d, ok := measured[onHost{v.ID, snap.Hosts[v.Host].ID}]; ok && d.rated {
				c.dirty.VM(v.ID).Observe(model.CPU, d.mibps)
			}
		}
	})
	if forecasting {
		c.eng.Learn(parts...)
		inParallel(len(snap.VMs), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				forecasts[i] = vms[i].Forecast(steps, conf)
				forecasts[i].Clamp(snap.VMs[i].Size)
			}
		})
	}
	return forecasts
}

// inParallel calls f on contiguous parts of [0, n) from up to GOMAXPROCS
// goroutines, and returns when all are done. Small n stays on this goroutine:
// below a few thousand items a goroutine costs more than it saves.
func inParallel(n int, f func(lo, hi int)) {
	const minPart = 4096
	w := min(runtime.GOMAXPROCS(0), (n+minPart-1)/minPart)
	if w <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := range w {
		lo, hi := k*n/w, (k+1)*n/w
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}
