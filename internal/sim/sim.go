// Package sim is the trace-driven shell around the decision core: a clock, a modelled
// cluster with CloudSim's allocation and power rules, migrations that take time, and
// the SLA metrics of Beloglazov & Buyya (SLATAH, PDM, SLAV, ESV).
package sim

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/rules"
	"github.com/headroom/headroom/internal/trace"
)

// Result is one run's figures. SLA figures are fractions.
type Result struct {
	Policy   string `json:"policy"`
	Workload string `json:"workload"`
	Hosts    int    `json:"hosts"`
	VMs      int    `json:"vms"`
	// EnergyKWh is everything the data centre spends: the hosts' power
	// (HostEnergyKWh, CloudSim's measure) and each live migration's measured
	// energy (MigrationEnergyKWh, model.MigrationJoules of the memory it copies).
	EnergyKWh          float64 `json:"energy_kwh"`
	HostEnergyKWh      float64 `json:"host_energy_kwh"`
	MigrationEnergyKWh float64 `json:"migration_energy_kwh"`
	Migrations         int     `json:"migrations"`
	SLATAH             float64 `json:"slatah"`
	PDM                float64 `json:"pdm"`
	SLAV               float64 `json:"slav"`
	ESV                float64 `json:"esv"`
	SLAOverall         float64 `json:"sla_overall"`
	Unplaced           int     `json:"no_suitable_host"`
	// RuleViolations counts must-rule breaches seen by the invariant check.
	RuleViolations int      `json:"rule_violations"`
	RuleExamples   []string `json:"rule_violation_examples,omitempty"`
	WallSeconds    float64  `json:"wall_seconds"`
	// ByResource is contention per resource (cpu, mem, net, disk); see ResourceSLA.
	ByResource map[string]ResourceSLA `json:"by_resource"`

	Series Series `json:"-"`
}

// ResourceSLA is one resource's contention over a run. SLATAH is the fraction of
// active host-time in which a host's demand for the resource exceeded its capacity
// (CPU: what the host's scheduler is asked for, migrating-in VMs at their copy
// share; memory: every VM listed on the host, a migrating-in VM's copy in full;
// network and disk: the VMs running there). Unmet is the fraction of the resource's
// demand not served: CPU and, past capacity, network and disk are shared out in
// proportion, so the excess is unmet; memory past capacity is a violation for every
// VM on the host, so all their memory demand counts as unmet for that time.
type ResourceSLA struct {
	SLATAH float64 `json:"slatah"`
	Unmet  float64 `json:"unmet"`
}

// Series holds one value per decision interval, for plots.
type Series struct {
	Time            []float64 // seconds
	ActiveHosts     []float64
	OverloadedHosts []float64
	Migrations      []float64
	EnergyKWh       []float64 // cumulative, hosts and migrations
}

// Options tune a run.
type Options struct {
	// Config describes the data centre; nil means DefaultConfig().
	Config *Config
	// Progress, if set, is called after each interval with done and total counts.
	Progress func(done, total int)
	// Rules are VM-VM and VM-host rules attached to the run; every must rule is
	// checked at every interval and after every migration that ends.
	Rules []model.Rule
}

type migration struct {
	vm, target int
	end        float64
	seq        int
}

type hostRec struct {
	util       float64 // utilisation at the last update
	alloc, req float64 // MIPS allocated and requested since the last update
	active     bool
	// Per resource since the last update: over capacity, the demand of the VMs
	// running there (memory, network, disk) and how much of it is unmet.
	over       [4]bool
	dem, unmet [4]float64
}

type vmRec struct {
	alloc, req float64
	migrating  bool
}

// engine holds a run's mutable state.
type engine struct {
	cfg    Config
	w      *trace.Workload
	pol    core.Policy
	npa    bool
	snap   *model.Snapshot
	hrec   []hostRec
	vrec   []vmRec
	flight []migration
	seq    int
	last   float64

	energyWs, migWs, activeTime, violTime, reqMIPSs, allocMIPSs, migUnder float64
	violR, demR, unmetR                                                   [4]float64
	violations                                                            int
	examples                                                              []string
	migrations, unplaced, dropped                                         int
	// clip is the most of each resource a VM can use in a multi-resource run:
	// the smallest host's capacity (0: no limit). A VM cannot use more than its
	// host has.
	clip model.Resources

	// Per VM, copied from the snapshot by every update so that the allocation
	// loop reads small arrays rather than the VMs' records: CPU demand, host,
	// whether migrating out, and vCPUs as a float.
	dem  []float64
	on   []int
	mig  []bool
	ncpu []float64
	rows demandRows
}

// demandRows holds every VM's CPU trace samples i and i+1 (as float64) for the
// trace step i updates are in, gathered once per step: a CPU-only run updates
// several times a step (each decision, each batch of migrations ending), and
// reading each VM's series anew every time is most of an update's cost.
type demandRows struct {
	i      int // the step held; -1 none
	lo, hi []float64
	end    []bool // i is at or past the series' last sample: lo is that sample
	size   []float64
}

// fill loads step i of w's VMs.
func (r *demandRows) fill(w *trace.Workload, i int) {
	for v := range w.VMs {
		cpu := w.VMs[v].CPU
		if i >= len(cpu)-1 {
			r.lo[v], r.hi[v], r.end[v] = float64(cpu[len(cpu)-1]), 0, true
			continue
		}
		r.lo[v], r.hi[v], r.end[v] = float64(cpu[i]), float64(cpu[i+1]), false
	}
	r.i = i
}

// cpuDemands writes every VM's CPU demand at t into d; it equals demand(v, t).
func (e *engine) cpuDemands(t float64, d []float64) {
	r := &e.rows
	x := t / e.w.Step
	i := int(x)
	if r.i != i {
		r.fill(e.w, i)
	}
	f := x - float64(i)
	for v := range d {
		if r.end[v] {
			d[v] = r.lo[v] * r.size[v]
			continue
		}
		u := r.lo[v]
		if f > 0 {
			u += (r.hi[v] - u) * f
		}
		d[v] = u * r.size[v]
	}
}

// Run simulates pol on w.
func Run(w *trace.Workload, pol core.Policy, opt Options) (*Result, error) {
	start := time.Now()
	cfg := DefaultConfig()
	if opt.Config != nil {
		cfg = *opt.Config
	}
	if err := cfg.fill(w); err != nil {
		return nil, err
	}
	e := &engine{cfg: cfg, w: w, pol: pol, snap: buildSnapshot(&cfg, w)}
	e.snap.Rules = opt.Rules
	if cfg.MultiResource {
		e.clip = smallestHost(e.snap)
		for v := range e.snap.VMs {
			e.snap.VMs[v].Reserved = clipTo(e.snap.VMs[v].Reserved, e.clip)
		}
	}
	if s, ok := pol.(*core.Static); ok && s.NonPowerAware {
		e.npa = true
	}
	e.hrec = make([]hostRec, len(e.snap.Hosts))
	e.vrec = make([]vmRec, len(e.snap.VMs))
	n := len(e.snap.VMs)
	e.dem, e.on, e.mig, e.ncpu = make([]float64, n), make([]int, n), make([]bool, n), make([]float64, n)
	for v := range e.ncpu {
		e.ncpu[v] = float64(max(e.snap.VMs[v].VCPU, 1))
	}
	if !cfg.MultiResource {
		e.rows = demandRows{i: -1, lo: make([]float64, n), hi: make([]float64, n), end: make([]bool, n), size: make([]float64, n)}
		for v := range e.rows.size {
			e.rows.size[v] = e.snap.VMs[v].Size.CPU
		}
	}

	hosts := core.PlaceAll(e.snap, pol)
	if cfg.MultiResource {
		aloneOnEmptyHosts(hosts, len(e.snap.Hosts))
	}
	for v, h := range hosts {
		if h < 0 {
			return nil, fmt.Errorf("initial placement: VM %s (%g MIPS, %g MB): %s among %d hosts",
				e.snap.VMs[v].ID, e.snap.VMs[v].Size.CPU, e.snap.VMs[v].Size.Mem, core.NoSuitableHost, len(e.snap.Hosts))
		}
		e.snap.VMs[v].Host, e.on[v] = h, h
		e.snap.Hosts[h].VMs = append(e.snap.Hosts[h].VMs, v)
	}
	e.checkRules()

	res := &Result{Policy: pol.Name(), Workload: w.Name, Hosts: len(e.snap.Hosts), VMs: len(e.snap.VMs)}
	// No update at t=0: as in CloudSim, hosts read utilisation 0 until the first
	// decision, so the first interval draws no energy and counts no SLA time.
	fc, err := newForecaster(pol, e, cfg)
	if err != nil {
		return nil, err
	}
	total := 0
	for k := 1; float64(k)*cfg.Interval+cfg.Offset < cfg.Duration; k++ {
		total = k
	}
	for k := 1; k <= total; k++ {
		t := float64(k)*cfg.Interval + cfg.Offset
		e.advance(t)
		e.update(t, true, true)
		e.publish()
		e.record()
		e.snap.Time = t
		plan := core.Decide(e.snap, fc.forecast(t), pol, nil)
		e.unplaced += len(plan.Unplaced)
		for _, m := range plan.Moves {
			e.start(m, t)
		}
		if len(plan.Moves) > 0 {
			e.update(t, false, false)
		}
		e.checkRules()
		res.Series.Time = append(res.Series.Time, t)
		res.Series.Migrations = append(res.Series.Migrations, float64(len(plan.Moves)))
		active, over := 0, 0
		for h := range e.hrec {
			if e.hrec[h].active {
				active++
			}
			if e.hrec[h].alloc < e.hrec[h].req {
				over++
			}
		}
		res.Series.ActiveHosts = append(res.Series.ActiveHosts, float64(active))
		res.Series.OverloadedHosts = append(res.Series.OverloadedHosts, float64(over))
		res.Series.EnergyKWh = append(res.Series.EnergyKWh, (e.energyWs+e.migWs)/3.6e6)
		if opt.Progress != nil {
			opt.Progress(k, total)
		}
	}
	e.advance(cfg.Duration) // migrations still in flight end before the clock stops
	res.RuleViolations, res.RuleExamples = e.violations, e.examples
	res.HostEnergyKWh, res.MigrationEnergyKWh = e.energyWs/3.6e6, e.migWs/3.6e6
	res.EnergyKWh = res.HostEnergyKWh + res.MigrationEnergyKWh
	res.Migrations = e.migrations
	res.Unplaced = e.unplaced
	if e.activeTime > 0 {
		res.SLATAH = e.violTime / e.activeTime
	}
	if e.reqMIPSs > 0 {
		res.PDM = e.migUnder / e.reqMIPSs
		res.SLAOverall = 1 - e.allocMIPSs/e.reqMIPSs
	}
	res.ByResource = map[string]ResourceSLA{}
	for _, r := range model.AllResources {
		var x ResourceSLA
		if e.activeTime > 0 {
			x.SLATAH = e.violR[r] / e.activeTime
		}
		if r == model.CPU {
			x.Unmet = max(res.SLAOverall, 0)
		} else if e.demR[r] > 0 {
			x.Unmet = e.unmetR[r] / e.demR[r]
		}
		res.ByResource[r.String()] = x
	}
	res.SLAV = res.SLATAH * res.PDM
	res.ESV = res.HostEnergyKWh * res.SLAV // CloudSim's ESV, on its measure of energy
	res.WallSeconds = time.Since(start).Seconds()
	return res, nil
}

// demand is v's CPU demand at time t in MIPS: the trace interpolated linearly.
func (e *engine) demand(v int, t float64) float64 {
	cpu := e.w.VMs[v].CPU
	x := t / e.w.Step
	i := int(x)
	if i >= len(cpu)-1 {
		return float64(cpu[len(cpu)-1]) * e.snap.VMs[v].Size.CPU
	}
	f := x - float64(i)
	u := float64(cpu[i])
	if f > 0 {
		u += (float64(cpu[i+1]) - u) * f
	}
	return u * e.snap.VMs[v].Size.CPU
}

// demandAt is v's demand in every resource at time t (the trace interpolated
// linearly), for a multi-resource run.
func (e *engine) demandAt(v int, t float64) model.Resources {
	s := &e.w.VMs[v]
	x := t / e.w.Step
	i := int(x)
	if i >= len(s.CPU)-1 {
		return clipTo(seriesDemand(s, len(s.CPU)-1), e.clip)
	}
	d := seriesDemand(s, i)
	if f := x - float64(i); f > 0 {
		d = d.Add(seriesDemand(s, i+1).Sub(d).Scale(f))
	}
	return clipTo(d, e.clip)
}

// aloneOnEmptyHosts puts each VM the policy placed nowhere on a host of its own.
// A VM's clipped demand fits any host alone, but a policy may keep a margin
// (a threshold under capacity) that a VM at its host's full size never fits;
// it has to run somewhere, and alone is where it disturbs no other VM.
func aloneOnEmptyHosts(hosts []int, n int) {
	used := map[int]bool{}
	for _, h := range hosts {
		used[h] = true
	}
	next := 0
	for v, h := range hosts {
		if h >= 0 {
			continue
		}
		for next < n && used[next] {
			next++
		}
		if next < n {
			hosts[v], used[next] = next, true
		}
	}
}

// clipTo bounds d by c in every resource where c is set.
func clipTo(d, c model.Resources) model.Resources {
	for _, r := range model.AllResources {
		if l := c.Get(r); l > 0 && d.Get(r) > l {
			d.Set(r, l)
		}
	}
	return d
}

// smallestHost is, per resource, the least capacity of any host (0 if any host
// leaves it untracked).
func smallestHost(s *model.Snapshot) model.Resources {
	var m model.Resources
	for i, h := range s.Hosts {
		for _, r := range model.AllResources {
			if c := h.Capacity.Get(r); i == 0 || c < m.Get(r) {
				m.Set(r, c)
			}
		}
	}
	return m
}

// record appends each VM's current utilisation to its history, newest first.
func (e *engine) record() {
	n := e.cfg.HistoryLength
	for v := range e.snap.VMs {
		vm := &e.snap.VMs[v]
		u := 0.0
		if vm.Size.CPU > 0 {
			u = vm.Demand.CPU / vm.Size.CPU
		}
		if len(vm.History) < n {
			vm.History = append(vm.History, 0)
		}
		copy(vm.History[1:], vm.History)
		vm.History[0] = u
	}
}

// start begins migration m at time t. The VM runs on its source until the copy ends
// and is also listed on the target meanwhile.
func (e *engine) start(m model.MigrationRequest, t float64) {
	vm := &e.snap.VMs[m.VM]
	vm.MigratingTo = append(vm.MigratingTo, m.Target)
	e.mig[m.VM] = true
	e.snap.Hosts[m.Target].VMs = append(e.snap.Hosts[m.Target].VMs, m.VM)
	bw := e.snap.Hosts[m.Target].Capacity.Net / 2 / 1000 // MB/s
	e.seq++
	e.flight = append(e.flight, migration{vm: m.VM, target: m.Target, end: t + vm.Size.Mem/bw, seq: e.seq})
	e.migrations++
	// The copy moves the VM's memory, the same MB that set its duration above.
	e.migWs += model.MigrationJoules(vm.Size.Mem)
}

// advance processes every migration that ends before t, in time order.
func (e *engine) advance(t float64) {
	slices.SortFunc(e.flight, func(a, b migration) int {
		if a.end != b.end {
			if a.end < b.end {
				return -1
			}
			return 1
		}
		return a.seq - b.seq
	})
	i := 0
	for i < len(e.flight) && e.flight[i].end < t {
		at := e.flight[i].end
		e.update(at, true, true)
		for i < len(e.flight) && e.flight[i].end == at {
			e.finish(e.flight[i])
			i++
		}
		e.checkRules()
		e.update(at, false, true)
	}
	e.flight = append(e.flight[:0], e.flight[i:]...)
}

func (e *engine) finish(m migration) {
	vm := &e.snap.VMs[m.vm]
	if src := vm.Host; src >= 0 {
		e.snap.Hosts[src].VMs = remove(e.snap.Hosts[src].VMs, m.vm)
	}
	tl := remove(e.snap.Hosts[m.target].VMs, m.vm)
	e.snap.Hosts[m.target].VMs = append(tl, m.vm)
	vm.Host, e.on[m.vm] = m.target, m.target
	vm.LastMigration = m.end
	if i := slices.Index(vm.MigratingTo, m.target); i >= 0 {
		vm.MigratingTo = slices.Delete(vm.MigratingTo, i, i+1)
	}
	e.mig[m.vm] = vm.Migrating()
}

func remove(l []int, v int) []int {
	if i := slices.Index(l, v); i >= 0 {
		return slices.Delete(l, i, i+1)
	}
	return l
}

// update brings the model to time t. With account set it first charges the interval
// since the last update (energy, SLA time, requested and lost MIPS) at the state
// recorded then; it then recomputes every host's allocation from demand at t. With
// drop set, VMs that ask for nothing leave afterwards (see Config.KeepIdleVMs).
func (e *engine) update(t float64, account, drop bool) {
	dt := t - e.last
	if account && dt > 0 {
		for h := range e.hrec {
			r := &e.hrec[h]
			if r.active {
				e.activeTime += dt
				if r.alloc < r.req {
					e.violTime += dt
				}
				for k, o := range r.over {
					if o {
						e.violR[k] += dt
					}
				}
			}
			if !e.cfg.MultiResource {
				continue // dem and unmet stay zero (see contention)
			}
			for k := range r.dem {
				e.demR[k] += r.dem[k] * dt
				e.unmetR[k] += r.unmet[k] * dt
			}
		}
		for v := range e.vrec {
			r := &e.vrec[v]
			e.reqMIPSs += r.req * dt
			e.allocMIPSs += r.alloc * dt
			if r.migrating && r.alloc < r.req {
				e.migUnder += (r.req - r.alloc) * dt
			}
		}
	}
	if checkMirrors {
		e.verifyMirrors()
	}
	if e.cfg.MultiResource {
		for v := range e.snap.VMs {
			vm := &e.snap.VMs[v]
			vm.Demand = e.demandAt(v, t)
			vm.Reserved = model.Resources{}
			e.dem[v] = vm.Demand.CPU
		}
	} else {
		// The snapshot's VMs get their demand from publish, before anything reads it.
		if plain {
			for v := range e.dem {
				e.dem[v] = e.demand(v, t)
			}
		} else {
			e.cpuDemands(t, e.dem)
		}
	}
	share := e.cfg.MigrationShare
	// Idle VMs leave each host as soon as its allocation is done rather than in
	// a pass of their own afterwards: the same VMs leave, since a VM that can
	// leave is not migrating and so is listed on its own host alone.
	fuse := drop && !e.cfg.KeepIdleVMs && !plain
	for h := range e.snap.Hosts {
		host := &e.snap.Hosts[h]
		c := host.Capacity.CPU
		if !plain && len(host.VMs) == 0 && !e.npa && c > 0 && host.Util == 0 && e.hrec[h] == (hostRec{}) {
			// An empty host that was off stays off: no energy, nothing to record.
			continue
		}
		asked := 0.0
		for _, v := range host.VMs {
			a := e.capped(v, host)
			if e.on[v] != h {
				a *= 1 - share
			}
			asked += a
		}
		scale, over := 1.0, asked > c
		if over {
			scale = c / asked
		}
		used, req := 0.0, 0.0
		for _, v := range host.VMs {
			a := e.capped(v, host)
			in := e.on[v] != h
			out := !in && e.mig[v]
			switch {
			case in:
				a *= (1 - share) * scale
			case out:
				a *= scale * share
			default:
				a *= scale
			}
			if over {
				a = math.Floor(a)
			}
			if !in {
				e.vrec[v] = vmRec{alloc: a, req: e.dem[v], migrating: out}
			}
			if out {
				a /= share
			}
			used += a
			req += e.dem[v]
		}
		u := used / c
		if u > 1 && u < 1.01 {
			u = 1
		}
		r := &e.hrec[h]
		if account && dt > 0 {
			switch {
			case e.npa:
				e.energyWs += host.Power[10] * dt
			case r.util > 0:
				e.energyWs += (host.Power.Power(r.util) + host.Power.Power(u)) / 2 * dt
			}
		}
		*r = hostRec{util: u, alloc: used, req: req, active: used > 0}
		r.over[model.CPU] = over
		if e.cfg.MultiResource {
			// A CPU-only run's VMs demand no memory, network or disk: nothing to count.
			e.contention(h, r)
		}
		host.Util = u
		if fuse {
			e.dropIdleOn(h)
		}
	}
	e.last = t
	if drop && !e.cfg.KeepIdleVMs && !fuse {
		e.dropIdle()
	}
}

// contention fills r's memory, network and disk demand, whether each is past h's
// capacity (0: untracked, never), and the unmet part (see ResourceSLA).
func (e *engine) contention(h int, r *hostRec) {
	host := &e.snap.Hosts[h]
	var listed model.Resources // every VM on the list, copies in included
	for _, v := range host.VMs {
		vm := &e.snap.VMs[v]
		if vm.Host == h {
			r.dem[model.Mem] += vm.Demand.Mem
			r.dem[model.Net] += vm.Demand.Net
			r.dem[model.Disk] += vm.Demand.Disk
		}
		listed.Mem += vm.Demand.Mem
	}
	if c := host.Capacity.Mem; c > 0 && listed.Mem > c {
		r.over[model.Mem] = true
		r.unmet[model.Mem] = r.dem[model.Mem]
	}
	for _, k := range []model.Resource{model.Net, model.Disk} {
		if c := host.Capacity.Get(k); c > 0 && r.dem[k] > c {
			r.over[k] = true
			r.unmet[k] = r.dem[k] - c
		}
	}
}

// publish writes the demand of the last update into the snapshot's VMs, which
// hold no capacity beyond it from then on. Only the decision and what feeds it
// (history, forecasts) read a VM's demand or reservation, so the updates between
// decisions (as migrations end) leave the snapshot's VMs alone. A multi-resource
// update writes them itself.
func (e *engine) publish() {
	if e.cfg.MultiResource {
		return
	}
	for v := range e.snap.VMs {
		vm := &e.snap.VMs[v]
		// Memory demand is zero as in CloudSim: the traces have none and RAM never binds.
		vm.Demand = model.Resources{CPU: e.dem[v]}
		vm.Reserved = model.Resources{}
	}
}

// plain turns off update's shortcuts (demand rows, skipping hosts that stay
// off, idle VMs leaving host by host), for tests that compare runs with and without them.
var plain bool

// checkMirrors makes every update check the engine's per-VM arrays against the
// snapshot (for tests).
var checkMirrors bool

// verifyMirrors panics if on or mig disagrees with the snapshot.
func (e *engine) verifyMirrors() {
	for v := range e.snap.VMs {
		vm := &e.snap.VMs[v]
		if e.on[v] != vm.Host || e.mig[v] != vm.Migrating() {
			panic(fmt.Sprintf("VM %d: engine has host %d migrating %v, snapshot %d %v", v, e.on[v], e.mig[v], vm.Host, vm.Migrating()))
		}
	}
}

// checkRules is the must-rule invariant, run whenever placement changes.
func (e *engine) checkRules() {
	if len(e.snap.Rules) == 0 {
		return
	}
	v := rules.Violations(e.snap)
	e.violations += len(v)
	for _, x := range v {
		if len(e.examples) < 5 {
			e.examples = append(e.examples, fmt.Sprintf("t=%.0f %s", e.last, x))
		}
	}
}

// dropIdle removes VMs that request no CPU and are not migrating, as CloudSim treats
// them as finished.
func (e *engine) dropIdle() {
	for h := range e.snap.Hosts {
		e.dropIdleOn(h)
	}
}

// dropIdleOn is dropIdle for host h's VMs.
func (e *engine) dropIdleOn(h int) {
	host := &e.snap.Hosts[h]
	keep := host.VMs[:0]
	for _, v := range host.VMs {
		if e.dem[v] == 0 && !e.mig[v] && e.on[v] == h {
			e.snap.VMs[v].Host, e.on[v] = -1, -1
			e.vrec[v] = vmRec{}
			e.dropped++
			continue
		}
		keep = append(keep, v)
	}
	host.VMs = keep
}

// capped is VM v's CPU demand as host can serve it: no vCPU gets more than one PE.
func (e *engine) capped(v int, host *model.Host) float64 {
	d := e.dem[v]
	n := e.ncpu[v]
	if host.PEMIPS > 0 && d/n > host.PEMIPS {
		return host.PEMIPS * n
	}
	return d
}

// RunAll runs each policy on w and returns the results in the order of pols. The
// runs share nothing they change (each builds its own cluster from w, which they
// only read), so they go side by side, as many at once as Go has processors for:
// the default `simulate` (headroom beside lr-mmt-1.2) then takes the longer run's
// time on two cores rather than the sum. opt gives each policy's options.
func RunAll(w *trace.Workload, pols []core.Policy, opt func(core.Policy) Options) ([]*Result, error) {
	results := make([]*Result, len(pols))
	errs := make([]error, len(pols))
	slots := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, p := range pols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			results[i], errs[i] = Run(w, p, opt(p))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("simulate %s on %s: %w", pols[i].Name(), w.Name, err)
		}
	}
	return results, nil
}
