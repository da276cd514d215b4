package prometheus

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// Driver is a hypervisor.Driver that lists, migrates and locates through the
// driver it wraps and reads Stats from Prometheus: "read from Prometheus,
// migrate through libvirt" is this composition.
type Driver struct {
	hypervisor.Driver // lists hosts and VMs, migrates
	src               *Source

	mu       sync.Mutex
	hosts    []hypervisor.Host
	vms      []hypervisor.VM
	listedAt time.Time
	held     map[string]string
	holds    atomic.Uint64
}

// NewDriver wraps inner with src's stats.
func NewDriver(inner hypervisor.Driver, src *Source) *Driver {
	return &Driver{Driver: inner, src: src}
}

// Source is the Prometheus source.
func (d *Driver) Source() *Source { return d.src }

// Hosts lists through the inner driver and remembers the answer for Stats.
func (d *Driver) Hosts(ctx context.Context) ([]hypervisor.Host, error) {
	hs, err := d.Driver.Hosts(ctx)
	d.mu.Lock()
	d.hosts = hs
	d.mu.Unlock()
	return hs, err
}

// VMs lists through the inner driver and remembers the answer for Stats.
func (d *Driver) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vms, err := d.Driver.VMs(ctx)
	d.mu.Lock()
	d.vms, d.listedAt = vms, time.Now()
	d.mu.Unlock()
	return vms, err
}

// listing is the latest Hosts and VMs, asked again when older than a few
// seconds: the controller lists just before it reads stats, so normally this
// costs the hosts nothing.
func (d *Driver) listing(ctx context.Context) ([]hypervisor.Host, []hypervisor.VM, error) {
	d.mu.Lock()
	hs, vms, at := d.hosts, d.vms, d.listedAt
	d.mu.Unlock()
	var err error
	if hs == nil {
		if hs, err = d.Hosts(ctx); hs == nil && err != nil {
			return nil, nil, err
		}
	}
	if time.Since(at) > 5*time.Second {
		vms, err = d.VMs(ctx)
	}
	return hs, vms, err
}

// Stats reads every VM's load from Prometheus. A host is held (see Held) when
// its exporter has no recent sample or one of its running VMs has no series or
// only an old one; its VMs' readings are still returned.
func (d *Driver) Stats(ctx context.Context) (hypervisor.Stats, error) {
	hs, vms, lerr := d.listing(ctx)
	smp, err := d.src.Read(ctx)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	st, held := d.convert(hs, vms, smp)
	d.mu.Lock()
	d.held = held
	d.mu.Unlock()
	d.holds.Add(uint64(len(held)))
	// Listing errors are the inner driver's per-host ones; the controller has
	// seen them already from its own listing.
	_ = lerr
	return st, nil
}

// Held is the hosts held at the last Stats, with the reason for each.
func (d *Driver) Held() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.held)
}

// Holds counts host holds over every Stats call.
func (d *Driver) Holds() uint64 { return d.holds.Load() }

func (d *Driver) convert(hs []hypervisor.Host, vms []hypervisor.VM, smp Sample) (hypervisor.Stats, map[string]string) {
	cfg := d.src.cfg
	st := hypervisor.Stats{Time: smp.Time}
	held := map[string]string{}
	type agg struct {
		cores, mem float64
		n          int
	}
	per := map[string]*agg{}
	pes := map[string]int{}
	for _, h := range hs {
		if h.Err != "" {
			continue
		}
		per[h.ID] = &agg{}
		pes[h.ID] = h.PEs
		if smp.HostSeen != nil {
			t, ok := smp.HostSeen[h.ID]
			switch {
			case !ok:
				held[h.ID] = fmt.Sprintf("no sample from host %s's exporter (%s=%q) in Prometheus", h.ID, cfg.HostLabel, cfg.hostValue(h.ID))
			case smp.Time.Sub(t) > cfg.MaxAge:
				held[h.ID] = fmt.Sprintf("host %s's exporter last answered %v ago (max_age %v)", h.ID, smp.Time.Sub(t).Round(time.Second), cfg.MaxAge)
			}
		}
	}
	missing := map[string][]string{}
	for _, v := range vms {
		a := per[v.Host]
		if a == nil {
			continue
		}
		k := Key{v.ID, v.Host}
		seen, ok := smp.VMSeen[k]
		if v.State == hypervisor.StateRunning {
			// A paused copy (an incoming migration) carries no load of its own
			// and may not be scraped yet.
			switch {
			case !ok:
				missing[v.Host] = append(missing[v.Host], v.ID+" has no series")
			case smp.Time.Sub(seen) > cfg.MaxAge:
				missing[v.Host] = append(missing[v.Host], fmt.Sprintf("%s's newest sample is %v old", v.ID, smp.Time.Sub(seen).Round(time.Second)))
			}
		}
		r, ok := smp.VMs[k]
		if !ok {
			continue
		}
		s := hypervisor.VMStats{VM: v.ID, Host: v.Host, Time: smp.Time, VCPUs: v.VCPUs,
			MemMiB: nz(r.MemBytes) / (1 << 20), NetRxKBps: nz(r.NetRxBps) / 1024, NetTxKBps: nz(r.NetTxBps) / 1024,
			DiskRdKBps: nz(r.DiskRdBps) / 1024, DiskWrKBps: nz(r.DiskWrBps) / 1024}
		if !math.IsNaN(r.Cores) {
			// rate() needs two samples in its window: until then no rate.
			s.Interval = cfg.RateWindow
			s.CPUCores = max(r.Cores, 0)
			if v.VCPUs > 0 {
				s.CPUUtil = min(s.CPUCores/float64(v.VCPUs), 1)
			}
		}
		a.cores += s.CPUCores
		a.mem += s.MemMiB
		a.n++
		st.VMs = append(st.VMs, s)
	}
	for h, ms := range missing {
		if _, ok := held[h]; ok {
			continue
		}
		sort.Strings(ms)
		more := ""
		if len(ms) > 3 {
			more = fmt.Sprintf(" and %d more", len(ms)-3)
			ms = ms[:3]
		}
		held[h] = fmt.Sprintf("stale or missing series on host %s (max_age %v): %s%s", h, cfg.MaxAge, strings.Join(ms, "; "), more)
	}
	for _, h := range hs {
		a := per[h.ID]
		if a == nil {
			continue
		}
		hs := hypervisor.HostStats{Host: h.ID, MemUsedMiB: a.mem, VMs: a.n}
		if pes[h.ID] > 0 {
			hs.CPUUtil = a.cores / float64(pes[h.ID])
		}
		st.Hosts = append(st.Hosts, hs)
	}
	return st, held
}

func nz(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return x
}

// Backfill reads up to n points of history at step for each running VM in
// vms and hands each VM's demand, oldest first, to fn (possibly from several
// goroutines at once). A gap inside a VM's history repeats the point before
// it, so that the daily cycle stays in phase; the history starts at the VM's
// first point. Read at a coarser step than step (Config.BackfillPoints), each
// point is repeated to fill the steps it stands for. It returns how many VMs
// had history.
func (d *Driver) Backfill(ctx context.Context, vms []hypervisor.VM, step time.Duration, n int, fn func(vm string, d []model.Resources)) (int, error) {
	byKey := map[Key]hypervisor.VM{}
	hosts := map[string][]string{}
	for _, v := range vms {
		if v.State != hypervisor.StateRunning {
			continue
		}
		byKey[Key{v.ID, v.Host}] = v
		hosts[v.Host] = append(hosts[v.Host], v.ID)
	}
	var count atomic.Int64
	err := d.src.History(ctx, hosts, step, n, func(k Key, p Points) {
		v, ok := byKey[k]
		if !ok {
			return
		}
		dem := Demand(p, v)
		coarse := max(p.Coarse-(len(p.R)-len(dem)), 0) // Demand drops the points before the first CPU reading
		if out := expand(dem, coarse, int(p.CoarseStep/step), int(p.Step/step), n); len(out) > 0 {
			count.Add(1)
			fn(v.ID, out)
		}
	})
	return int(count.Load()), err
}

// expand repeats each of d's first coarse points kc times and each later
// one k times (a point read at k steps stands for each of them), keeping the
// newest n.
func expand(d []model.Resources, coarse, kc, k, n int) []model.Resources {
	if k <= 1 && coarse == 0 {
		return d
	}
	rep := func(i int) int {
		if i < coarse {
			return kc
		}
		return k
	}
	steps := coarse*kc + (len(d)-coarse)*k
	out := make([]model.Resources, 0, min(steps, n))
	skip := max(steps-n, 0)
	for i, r := range d {
		for range rep(i) {
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, r)
		}
	}
	return out
}

// Demand turns a VM's points into demand in model units (see
// hypervisor.VMStats.Demand), from its first point with a CPU reading.
func Demand(p Points, v hypervisor.VM) []model.Resources {
	first := -1
	for i, r := range p.R {
		if !math.IsNaN(r.Cores) {
			first = i
			break
		}
	}
	if first < 0 {
		return nil
	}
	out := make([]model.Resources, 0, len(p.R)-first)
	var last model.Resources
	for _, r := range p.R[first:] {
		if math.IsNaN(r.Cores) {
			out = append(out, last)
			continue
		}
		util := 0.0
		if v.VCPUs > 0 {
			util = min(max(r.Cores, 0)/float64(v.VCPUs), 1)
		}
		cur := model.Resources{
			CPU:  util * v.Size.CPU,
			Mem:  nz(r.MemBytes) / (1 << 20),
			Net:  (nz(r.NetRxBps) + nz(r.NetTxBps)) / 1024,
			Disk: (nz(r.DiskRdBps) + nz(r.DiskWrBps)) / 1024,
		}
		if math.IsNaN(r.MemBytes) {
			cur.Mem = last.Mem
		}
		out = append(out, cur)
		last = cur
	}
	return out
}
