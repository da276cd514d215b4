package libvirt

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"
)

// Dirty rate: QEMU's calc-dirty-rate, through virDomainStartDirtyRateCalc
// (libvirt 7.2+). In page-sampling mode QEMU hashes a random sample of guest
// pages (512 per GiB) at the start and the end of a period and scales the share
// that changed to the RAM size, in MiB/s: the distinct pages dirtied in the
// period, so a guest rewriting a small buffer reads at most buffer/period. Each
// Stats call starts a calculation on every running domain that is not measuring
// already, and reads the previous one's result from the dirtyrate.* stats.
//
// Page sampling only: the dirty-bitmap mode turns on dirty logging, which a
// migration needs for itself, and in the lab (QEMU 7.2, TCG) it killed QEMU.
const (
	// dirtyCalcSeconds is the measuring period: short, so the value is the
	// current rate and a Stats interval of a few seconds always finds it done.
	dirtyCalcSeconds = 1
	// dirtyMaxAge drops a value no newer calculation replaced.
	dirtyMaxAge = 10 * time.Minute
	// dirtyMaxFails unexplained refusals in a row stop the attempts on a domain.
	dirtyMaxFails = 3
	// dirtyStatsRetry is how long a host whose libvirt fails the dirtyrate stats
	// group is asked without it before trying again.
	dirtyStatsRetry = 10 * time.Minute
	// dirtyKickWait bounds how long Stats waits for the calculations it starts,
	// so that a caller sampling again a period later finds them measured.
	dirtyKickWait = 500 * time.Millisecond
)

// QEMU's dirty-rate states, as the dirtyrate.calc_status stat reports them.
const (
	dirtyUnstarted = int(lv.DomainDirtyrateUnstarted)
	dirtyMeasuring = int(lv.DomainDirtyrateMeasuring)
	dirtyMeasured  = int(lv.DomainDirtyrateMeasured)
)

// dirtyDom is what the driver knows about one QEMU process's dirty rate.
type dirtyDom struct {
	mibps    float64
	start    int64 // dirtyrate.calc_start_time of mibps
	seen     time.Time
	has      bool
	inflight bool
	fails    int
	off      bool // refused as unsupported: stop asking this process
}

// dirtyState is the driver's dirty-rate bookkeeping; guarded by Driver.mu.
type dirtyState struct {
	doms map[string]*dirtyDom // by dirtyKey
	// statsOff holds hosts whose libvirt failed the stats call with the dirtyrate
	// group (a QEMU without query-dirty-rate fails the whole call), until when.
	statsOff map[string]time.Time
}

// dirtyKey names a domain's QEMU process: a restart gets a new domain ID and so
// a fresh chance to measure.
func dirtyKey(host string, dom lv.Domain) string {
	return host + "/" + dom.Name + "#" + strconv.Itoa(int(dom.ID))
}

// statsFlags is the stats groups to ask host for.
func (d *Driver) statsFlags(host string, now time.Time) lv.DomainStatsTypes {
	d.mu.Lock()
	defer d.mu.Unlock()
	if until, ok := d.dirty.statsOff[host]; ok && now.Before(until) {
		return statsWanted &^ lv.DomainStatsDirtyrate
	}
	return statsWanted
}

func (d *Driver) dirtyStatsFailed(host string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dirty.statsOff[host] = now.Add(dirtyStatsRetry)
}

// dirtyRate updates domain key's record from a stats sample and returns the rate
// to report, and whether to start a new calculation. Call with d.mu held.
func (d *Driver) dirtyRate(key string, c counters, running bool, now time.Time) (float64, bool, bool) {
	dd := d.dirty.doms[key]
	if dd == nil {
		dd = &dirtyDom{}
		d.dirty.doms[key] = dd
	}
	if c.hasDirty && (c.dirtyStatus == dirtyMeasured || !c.hasDirtyStatus) {
		if !dd.has || c.dirtyStart != dd.start || !c.hasDirtyStatus {
			dd.mibps, dd.start, dd.seen, dd.has = c.dirtyMiBps, c.dirtyStart, now, true
		}
	}
	kick := c.hasDirtyStatus && running && !dd.off && !dd.inflight && c.dirtyStatus != dirtyMeasuring
	if kick {
		dd.inflight = true
	}
	if dd.has && now.Sub(dd.seen) <= dirtyMaxAge {
		return dd.mibps, true, kick
	}
	return 0, false, kick
}

// forgetDirty drops the records of host's domains not in seen.
func (d *Driver) forgetDirty(host string, seen map[string]bool) {
	for k := range d.dirty.doms {
		if strings.HasPrefix(k, host+"/") && !seen[k] {
			delete(d.dirty.doms, k)
		}
	}
}

// kickDirty starts a dirty-rate calculation on each domain, waiting at most
// dirtyKickWait for them. A domain with a job (a migration) is skipped: libvirt
// would hold the call until the job ends.
func (d *Driver) kickDirty(h *host, doms []lv.Domain, keys []string) {
	if len(doms) == 0 {
		return
	}
	var wg sync.WaitGroup
	for i, dom := range doms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.dirtyStarted(keys[i], d.startDirtyCalc(h, dom))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(dirtyKickWait):
	}
}

// errBusyJob says the domain had a job running, so no calculation was started.
var errBusyJob = errors.New("domain has a job")

func (d *Driver) startDirtyCalc(h *host, dom lv.Domain) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DialTimeout)
	c, err := h.client(ctx)
	cancel()
	if err != nil {
		return err
	}
	// Not through h.call: a call held behind a job must not time out and close
	// the connection every other caller shares. A domain's calls are serialised
	// by the inflight flag, so at most one waits per domain.
	typ, _, _, _, _, _, _, _, _, _, _, _, err := c.DomainGetJobInfo(dom)
	if err != nil {
		return err
	}
	if t := lv.DomainJobType(typ); t == lv.DomainJobBounded || t == lv.DomainJobUnbounded {
		return errBusyJob
	}
	return c.DomainStartDirtyRateCalc(dom, dirtyCalcSeconds, uint32(lv.DomainDirtyrateModePageSampling))
}

// dirtyStarted records how a start went: a refusal that says the QEMU or libvirt
// cannot measure, or too many unexplained ones, stop the attempts on this domain.
func (d *Driver) dirtyStarted(key string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dd := d.dirty.doms[key]
	if dd == nil {
		return // gone meanwhile
	}
	dd.inflight = false
	switch {
	case err == nil:
		dd.fails = 0
	case dirtyUnsupported(err):
		dd.off = true
	case dirtyTransient(err):
	default:
		dd.fails++
		dd.off = dd.fails >= dirtyMaxFails
	}
}

// dirtyUnsupported reports an error that will not go away for this process: an
// old libvirt without the call, or a QEMU without calc-dirty-rate.
func dirtyUnsupported(err error) bool {
	var e lv.Error
	if !errors.As(err, &e) {
		return false
	}
	switch lv.ErrorNumber(e.Code) {
	case lv.ErrNoSupport, lv.ErrOperationUnsupported:
		return true
	}
	msg := strings.ToLower(e.Message)
	return strings.Contains(msg, "has not been found") || strings.Contains(msg, "unknown procedure") ||
		strings.Contains(msg, "not supported")
}

// dirtyTransient reports an error that says nothing about support: the domain
// stopped or is busy, or a calculation someone else started is still running.
func dirtyTransient(err error) bool {
	if errors.Is(err, errBusyJob) {
		return true
	}
	var e lv.Error
	if !errors.As(err, &e) {
		return true // the connection, not the domain
	}
	switch lv.ErrorNumber(e.Code) {
	case lv.ErrOperationInvalid, lv.ErrNoDomain, lv.ErrOperationTimeout:
		return true
	}
	return strings.Contains(e.Message, "already being measured")
}
