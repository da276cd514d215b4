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
type counters struct {
	state      int
	cpuNs      uint64 // cpu.time
	vcpus      int
	balloonKiB uint64 // balloon.current
	rssKiB     uint64 // balloon.rss
	rx, tx     uint64 // sum of net.<i>.rx.bytes / tx.bytes
	rd, wr     uint64 // sum of block.<i>.rd.bytes / wr.bytes
	// dirtyrate.*: QEMU's last calculation, if the stats group is answered.
	dirtyMiBps     float64
	hasDirty       bool
	dirtyStatus    int
	hasDirtyStatus bool
	dirtyStart     int64
}

// sample is what the driver keeps between Stats calls to turn counters into rates.
type sample struct {
	t time.Time
	c counters
}

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
			c.cpuNs = unum(p.Value)
		case "vcpu.current":
			c.vcpus = int(unum(p.Value))
		case "balloon.current":
			c.balloonKiB = unum(p.Value)
		case "balloon.rss":
			c.rssKiB = unum(p.Value)
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
			case "net.tx.bytes":
				c.tx += unum(p.Value)
			case "block.rd.bytes":
				c.rd += unum(p.Value)
			case "block.wr.bytes":
				c.wr += unum(p.Value)
			}
		}
	}
	return c
}

// rates turns two samples of one VM into its VMStats. A counter that went backwards
// means a new QEMU process (a restart): the sample counts as a first one.
func rates(vm, host string, now time.Time, cur counters, prev *sample) hypervisor.VMStats {
	s := hypervisor.VMStats{
		VM: vm, Host: host, Time: now, VCPUs: cur.vcpus,
		CPUSeconds: float64(cur.cpuNs) / 1e9,
		MemMiB:     float64(cur.balloonKiB) / 1024,
		RSSMiB:     float64(cur.rssKiB) / 1024,
	}
	if cur.hasDirty {
		s.DirtyMiBps = cur.dirtyMiBps
	}
	if prev == nil {
		return s
	}
	p := prev.c
	dt := now.Sub(prev.t)
	if dt <= 0 || cur.cpuNs < p.cpuNs || cur.rx < p.rx || cur.tx < p.tx || cur.rd < p.rd || cur.wr < p.wr {
		return s
	}
	sec := dt.Seconds()
	s.Interval = dt
	n := max(cur.vcpus, 1)
	s.CPUUtil = float64(cur.cpuNs-p.cpuNs) / 1e9 / sec / float64(n)
	s.NetRxKBps = float64(cur.rx-p.rx) / 1024 / sec
	s.NetTxKBps = float64(cur.tx-p.tx) / 1024 / sec
	s.DiskRdKBps = float64(cur.rd-p.rd) / 1024 / sec
	s.DiskWrKBps = float64(cur.wr-p.wr) / 1024 / sec
	return s
}

const statsWanted = lv.DomainStatsState | lv.DomainStatsCPUTotal | lv.DomainStatsBalloon |
	lv.DomainStatsVCPU | lv.DomainStatsInterface | lv.DomainStatsBlock | lv.DomainStatsDirtyrate

// Stats implements hypervisor.Driver with one ConnectGetAllDomainStats call per
// host. It also starts a dirty-rate calculation on each running VM (see
// dirtyrate.go), whose result the next call reports.
func (d *Driver) Stats(ctx context.Context) (hypervisor.Stats, error) {
	type hostSample struct {
		t    time.Time
		recs []lv.DomainStatsRecord
		ni   *nodeInfo
		ok   bool
	}
	got := make([]hostSample, len(d.hosts))
	err := d.eachHost(func(i int, h *host) error {
		ni, err := h.nodeInfo(ctx)
		if err != nil {
			return err
		}
		return h.call(ctx, "stats", func(c *lv.Libvirt) error {
			want := d.statsFlags(h.cfg.ID, time.Now())
			recs, err := c.ConnectGetAllDomainStats(nil, uint32(want), uint32(lv.ConnectGetAllDomainsStatsActive))
			if err != nil && want&lv.DomainStatsDirtyrate != 0 {
				// A QEMU without query-dirty-rate fails the whole call: the other
				// stats matter more, so ask again without it and remember.
				var err2 error
				recs, err2 = c.ConnectGetAllDomainStats(nil, uint32(want&^lv.DomainStatsDirtyrate), uint32(lv.ConnectGetAllDomainsStatsActive))
				if err2 == nil {
					d.dirtyStatsFailed(h.cfg.ID, time.Now())
					err = nil
				}
			}
			if err != nil {
				return err
			}
			got[i] = hostSample{t: time.Now(), recs: recs, ni: ni, ok: true}
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
		var cpuSec float64
		var interval time.Duration
		for _, r := range g.recs {
			key := id + "/" + r.Dom.Name
			seen[key] = true
			cur := parseRecord(r.Params)
			var prev *sample
			if p, ok := d.prev[key]; ok {
				prev = &p
			}
			vs := rates(r.Dom.Name, id, g.t, cur, prev)
			d.prev[key] = sample{t: g.t, c: cur}
			dk := dirtyKey(id, r.Dom)
			seenDirty[dk] = true
			_, migrating := d.migs[r.Dom.Name]
			running := stateOf(int32(cur.state)) == hypervisor.StateRunning && !migrating
			rate, ok, kick := d.dirtyRate(dk, cur, running, g.t)
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
			if vs.Interval > 0 {
				cpuSec += vs.CPUUtil * float64(max(vs.VCPUs, 1)) * vs.Interval.Seconds()
				interval = max(interval, vs.Interval)
			}
		}
		if interval > 0 && g.ni.cpus > 0 {
			hs.CPUUtil = cpuSec / interval.Seconds() / float64(g.ni.cpus)
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
