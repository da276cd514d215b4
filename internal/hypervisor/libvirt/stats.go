package libvirt

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/hypervisor"
)

// counters are one domain's cumulative counters from the all-domain stats call.
// The has* flags say a group was answered: libvirt leaves out what needs the
// domain's job when another job holds it (we ask it not to wait).
type counters struct {
	state      int
	cpuNs      uint64 // cpu.time
	hasCPU     bool
	vcpus      int
	balloonKiB uint64 // balloon.current
	rssKiB     uint64 // balloon.rss
	hasRSS     bool
	rx, tx     uint64 // sum of net.<i>.rx.bytes / tx.bytes
	hasNet     bool
	rd, wr     uint64 // sum of block.<i>.rd.bytes / wr.bytes
	hasBlock   bool
	// dirtyrate.*: QEMU's last calculation, if the stats group is answered.
	dirtyMiBps     float64
	hasDirty       bool
	dirtyStatus    int
	hasDirtyStatus bool
	dirtyStart     int64

	// The guest's balloon driver: balloon.available (its total), .usable (its
	// MemAvailable) and .unused (its MemFree), KiB.
	availKiB, usableKiB, unusedKiB uint64
}

// sample is one domain's counters as one stats call read them: what the driver
// keeps between Stats calls to turn counters into rates.
type sample struct {
	// t is when the counters were read, which libvirt does not say: the middle
	// of the call. slack is half the call's length, how far t may be off.
	t     time.Time
	slack time.Duration
	id    int32 // libvirt's domain ID: each QEMU process gets a new one
	c     counters
	// arrived is when the domain began to run here after an incoming
	// migration; zero when it did not arrive while watched.
	arrived time.Time
}

// running reports whether the sample's domain was running (not paused, as an
// incoming migration is until it completes).
func (s sample) running() bool { return stateOf(int32(s.c.state)) == hypervisor.StateRunning }

// maxTimingError is the largest share of an interval the two calls' slack may
// be before a rate is refused: a call held up for seconds, followed by a quick
// one, would otherwise report the CPU time of the whole wait over the short gap.
const maxTimingError = 0.1

// num reads a typed parameter as a number.
func num(v lv.TypedParamValue) (float64, bool) {
	switch x := v.I.(type) {
	case int32:
		return float64(x), true
	case uint32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func unum(v lv.TypedParamValue) uint64 {
	switch x := v.I.(type) {
	case uint64:
		return x
	case int64:
		return uint64(max(x, 0))
	case uint32:
		return uint64(x)
	case int32:
		return uint64(max(x, 0))
	}
	f, _ := num(v)
	return uint64(max(f, 0))
}

// parseRecord sums up one domain's stats record. Per-device fields are
// "net.<i>.rx.bytes" and "block.<i>.rd.bytes"; other fields are ignored.
func parseRecord(params []lv.TypedParam) counters {
	var c counters
	for _, p := range params {
		f := p.Field
		switch f {
		case "state.state":
			x, _ := num(p.Value)
			c.state = int(x)
		case "cpu.time":
			c.cpuNs, c.hasCPU = unum(p.Value), true
		case "vcpu.current":
			c.vcpus = int(unum(p.Value))
		case "balloon.current":
			c.balloonKiB = unum(p.Value)
		case "balloon.rss":
			c.rssKiB, c.hasRSS = unum(p.Value), true
		case "balloon.available":
			c.availKiB = unum(p.Value)
		case "balloon.usable":
			c.usableKiB = unum(p.Value)
		case "balloon.unused":
			c.unusedKiB = unum(p.Value)
		case lv.DomainStatsDirtyrateMegabytesPerSecond:
			x, _ := num(p.Value)
			c.dirtyMiBps, c.hasDirty = x, true
		case lv.DomainStatsDirtyrateCalcStatus:
			x, _ := num(p.Value)
			c.dirtyStatus, c.hasDirtyStatus = int(x), true
		case lv.DomainStatsDirtyrateCalcStartTime:
			x, _ := num(p.Value)
			c.dirtyStart = int64(x)
		default:
			dev, rest, ok := strings.Cut(f, ".")
			if !ok || (dev != "net" && dev != "block") {
				continue
			}
			idx, field, ok := strings.Cut(rest, ".")
			if !ok {
				continue
			}
			if _, err := strconv.Atoi(idx); err != nil {
				continue // net.count, block.count
			}
			switch dev + "." + field {
			case "net.rx.bytes":
				c.rx += unum(p.Value)
				c.hasNet = true
			case "net.tx.bytes":
				c.tx += unum(p.Value)
				c.hasNet = true
			case "block.rd.bytes":
				c.rd += unum(p.Value)
				c.hasBlock = true
			case "block.wr.bytes":
				c.wr += unum(p.Value)
				c.hasBlock = true
			}
		}
	}
	return c
}

// guestUsedMiB is what the guest uses of its memory by its own account: total
// less available (page cache it could drop counts as free), else less free; 0
// without balloon statistics.
func (c counters) guestUsedMiB() float64 {
	free := c.usableKiB
	if free == 0 {
		free = c.unusedKiB
	}
	if c.availKiB == 0 || free == 0 || free > c.availKiB {
		return 0
	}
	return float64(c.availKiB-free) / 1024
}

// keepBases is how many earlier samples of a domain are kept as bases of rates.
// Two: when the newest is too recent or was badly timed, the one before it serves.
const keepBases = 2

// rates turns a domain's new sample into its VMStats, with rates measured from
// the newest base (earlier sample, oldest first in bases) that is at least
// minInterval older and timed well enough, and returns the bases to keep.
//
// There are no rates (Interval 0) and cur becomes the only base when there are
// no bases, when cur comes from a new QEMU process (its domain ID changed or its
// CPU time went backwards), or when the domain runs now but did not at the
// newest base: an incoming migration's QEMU counts the CPU it spent receiving the
// VM, which is not the guest's load; nor is a base within settle of that, nor
// the span between two paused samples. There are no rates either when no base is
// old enough or the calls were too slow to say when the counters were read. cur
// joins the bases only if it is at least minInterval after the newest.
func rates(vm, host string, cur sample, bases []sample, minInterval, settle time.Duration) (hypervisor.VMStats, []sample) {
	s := hypervisor.VMStats{
		VM: vm, Host: host, Time: cur.t, VCPUs: cur.c.vcpus,
		CPUSeconds: float64(cur.c.cpuNs) / 1e9,
		MemMiB:     float64(cur.c.balloonKiB) / 1024,
		RSSMiB:     float64(cur.c.rssKiB) / 1024,
	}
	s.GuestUsedMiB = cur.c.guestUsedMiB()
	if cur.c.hasDirty {
		s.DirtyMiBps = cur.c.dirtyMiBps
	}
	if len(bases) == 0 {
		return s, []sample{cur}
	}
	last := bases[len(bases)-1]
	if cur.id != last.id || (cur.c.hasCPU && last.c.hasCPU && cur.c.cpuNs < last.c.cpuNs) {
		return s, []sample{cur}
	}
	if cur.running() && !last.running() {
		cur.arrived = cur.t
		return s, []sample{cur}
	}
	cur.arrived = last.arrived
	for i := len(bases) - 1; i >= 0; i-- {
		b := bases[i]
		dt := cur.t.Sub(b.t)
		if !b.arrived.IsZero() && b.t.Before(b.arrived.Add(settle)) {
			continue
		}
		if !cur.running() && !b.running() {
			// Paused throughout: QEMU's own work (receiving an incoming
			// migration), not the guest's.
			continue
		}
		if dt >= minInterval && float64(b.slack+cur.slack) <= maxTimingError*float64(dt) {
			measure(&s, b, cur, dt)
			break
		}
	}
	if cur.t.Sub(last.t) >= minInterval {
		bases = append(append([]sample(nil), bases[max(0, len(bases)-keepBases+1):]...), cur)
	}
	return s, bases
}

// measure fills s's rates from base to cur, dt apart.
func measure(s *hypervisor.VMStats, base, cur sample, dt time.Duration) {
	p, c := base.c, cur.c
	sec := dt.Seconds()
	s.Interval = dt
	if c.hasCPU && p.hasCPU {
		// cpu.time counts all of QEMU's threads: emulator, I/O and migration
		// work come on top of the vCPUs. The VM's utilisation is capped at its
		// vCPUs (what the decision core can place); the host's keeps it all.
		s.CPUCores = float64(c.cpuNs-p.cpuNs) / 1e9 / sec
		s.CPUUtil = min(s.CPUCores/float64(max(c.vcpus, 1)), 1)
	}
	if c.hasNet && p.hasNet && c.rx >= p.rx && c.tx >= p.tx {
		s.NetRxKBps = float64(c.rx-p.rx) / 1024 / sec
		s.NetTxKBps = float64(c.tx-p.tx) / 1024 / sec
	}
	if c.hasBlock && p.hasBlock && c.rd >= p.rd && c.wr >= p.wr {
		s.DiskRdKBps = float64(c.rd-p.rd) / 1024 / sec
		s.DiskWrKBps = float64(c.wr-p.wr) / 1024 / sec
	}
}

const statsWanted = lv.DomainStatsState | lv.DomainStatsCPUTotal | lv.DomainStatsBalloon |
	lv.DomainStatsVCPU | lv.DomainStatsInterface | lv.DomainStatsBlock | lv.DomainStatsDirtyrate

// statsFlags are the all-domain stats call's flags. NOWAIT: a domain whose job is
// taken (the target of an incoming migration holds one for the whole move)
// answers at once with what needs no job (state, CPU time, network) instead of
// holding the call, and every other domain's counters with it, until the job ends.
const statsCallFlags = lv.ConnectGetAllDomainsStatsActive | lv.ConnectGetAllDomainsStatsNowait

// Stats implements hypervisor.Driver with one ConnectGetAllDomainStats call per
// host. It also starts a dirty-rate calculation on each running VM (see
// dirtyrate.go), whose result the next call reports.
func (d *Driver) Stats(ctx context.Context) (hypervisor.Stats, error) {
	type hostSample struct {
		t     time.Time
		slack time.Duration
		recs  []lv.DomainStatsRecord
		ni    *nodeInfo
		ok    bool
	}
	got := make([]hostSample, len(d.hosts))
	err := d.eachHost(func(i int, h *host) error {
		ni, err := h.nodeInfo(ctx)
		if err != nil {
			return err
		}
		return h.call(ctx, "stats", func(c *lv.Libvirt) error {
			want := d.statsFlags(h.cfg.ID, time.Now())
			t0 := time.Now()
			recs, err := c.ConnectGetAllDomainStats(nil, uint32(want), uint32(statsCallFlags))
			if err != nil && want&lv.DomainStatsDirtyrate != 0 {
				// A QEMU without query-dirty-rate fails the whole call: the other
				// stats matter more, so ask again without it and remember.
				var err2 error
				t0 = time.Now()
				recs, err2 = c.ConnectGetAllDomainStats(nil, uint32(want&^lv.DomainStatsDirtyrate), uint32(statsCallFlags))
				if err2 == nil {
					d.dirtyStatsFailed(h.cfg.ID, time.Now())
					err = nil
				}
			}
			if err != nil {
				return err
			}
			half := time.Since(t0) / 2
			got[i] = hostSample{t: t0.Add(half), slack: half, recs: recs, ni: ni, ok: true}
			return nil
		})
	})

	st := hypervisor.Stats{Time: time.Now()}
	kicks := make([][]lv.Domain, len(d.hosts))
	kickKeys := make([][]string, len(d.hosts))
	d.mu.Lock()
	for i, h := range d.hosts {
		g := got[i]
		if !g.ok {
			continue // keep its old samples: rates resume when it answers again
		}
		id := h.cfg.ID
		hs := hypervisor.HostStats{Host: id}
		seen := map[string]bool{}
		seenDirty := map[string]bool{}
		var cores float64 // CPU time per second, all of QEMU's threads
		for _, r := range g.recs {
			key := id + "/" + r.Dom.Name
			seen[key] = true
			cur := sample{t: g.t, slack: g.slack, id: r.Dom.ID, c: parseRecord(r.Params)}
			bases := d.prev[key]
			if n := len(bases); n > 0 && !cur.c.hasRSS && bases[n-1].c.hasRSS && bases[n-1].id == cur.id {
				cur.c.rssKiB, cur.c.hasRSS = bases[n-1].c.rssKiB, true // the last known, while the job is busy
			}
			if n := len(bases); n > 0 && cur.c.availKiB == 0 && bases[n-1].id == cur.id {
				b := bases[n-1].c // likewise the guest's own memory figures
				cur.c.availKiB, cur.c.usableKiB, cur.c.unusedKiB = b.availKiB, b.usableKiB, b.unusedKiB
			}
			vs, bases := rates(r.Dom.Name, id, cur, bases, d.cfg.MinRateInterval, d.cfg.ArrivalSettle)
			d.prev[key] = bases
			dk := dirtyKey(id, r.Dom)
			seenDirty[dk] = true
			_, migrating := d.migs[r.Dom.Name]
			running := cur.running() && !migrating
			rate, ok, kick := d.dirtyRate(dk, cur.c, running, g.t)
			vs.DirtyMiBps = 0
			if ok {
				vs.DirtyMiBps = rate
			}
			if kick {
				kicks[i] = append(kicks[i], r.Dom)
				kickKeys[i] = append(kickKeys[i], dk)
			}
			st.VMs = append(st.VMs, vs)
			hs.VMs++
			mem := vs.RSSMiB
			if mem == 0 {
				mem = vs.MemMiB
			}
			hs.MemUsedMiB += mem
			cores += vs.CPUCores
		}
		if capacity, _, coreMHz := h.shape(g.ni); capacity.CPU > 0 && coreMHz > 0 {
			hs.CPUUtil = cores / (capacity.CPU / coreMHz)
		}
		for k := range d.prev {
			if strings.HasPrefix(k, id+"/") && !seen[k] {
				delete(d.prev, k) // gone from this host (migrated or stopped)
			}
		}
		d.forgetDirty(id, seenDirty)
		st.Hosts = append(st.Hosts, hs)
	}
	d.mu.Unlock()

	var wg sync.WaitGroup
	for i, h := range d.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.kickDirty(h, kicks[i], kickKeys[i])
		}()
	}
	wg.Wait()
	return st, err
}
