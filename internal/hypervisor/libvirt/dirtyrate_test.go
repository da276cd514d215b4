package libvirt

import (
	"fmt"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/hypervisor"
)

func newTestDriver(t *testing.T) *Driver {
	d, err := New(Config{Hosts: []HostConfig{{ID: "h", URI: "qemu+tcp://127.0.0.1/system"}}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func dirtyRec(status int32, start, mibps int64) counters {
	ps := []lv.TypedParam{tp("state.state", int32(1)), tp(lv.DomainStatsDirtyrateCalcStatus, status),
		tp(lv.DomainStatsDirtyrateCalcStartTime, start)}
	if status == int32(lv.DomainDirtyrateMeasured) {
		ps = append(ps, tp(lv.DomainStatsDirtyrateMegabytesPerSecond, mibps))
	}
	return parseRecord(ps)
}

// TestDirtyRateCycle walks one domain through Stats calls: the first starts a
// calculation, the value shows once measured and stays while the next one runs.
func TestDirtyRateCycle(t *testing.T) {
	d := newTestDriver(t)
	key := dirtyKey("h", lv.Domain{Name: "vm", ID: 7})
	t0 := time.Unix(1000, 0)
	step := func(c counters, dt time.Duration, running bool) (float64, bool, bool) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.dirtyRate(key, c, running, t0.Add(dt))
	}
	if _, ok, kick := step(dirtyRec(0, 0, 0), 0, true); ok || !kick {
		t.Fatalf("unstarted: value %v, kick %v; want none and a start", ok, kick)
	}
	// Started but not yet answered: no second start.
	if _, _, kick := step(dirtyRec(0, 0, 0), time.Second, true); kick {
		t.Fatal("second start while one is in flight")
	}
	d.dirtyStarted(key, nil)
	if _, ok, kick := step(dirtyRec(1, 5, 0), 2*time.Second, true); ok || kick {
		t.Fatalf("measuring: value %v kick %v", ok, kick)
	}
	v, ok, kick := step(dirtyRec(2, 5, 21), 3*time.Second, true)
	if !ok || v != 21 || !kick {
		t.Fatalf("measured: %v %v kick %v", v, ok, kick)
	}
	d.dirtyStarted(key, nil)
	// The next calculation runs: the last value stands.
	if v, ok, _ := step(dirtyRec(1, 9, 0), 4*time.Second, true); !ok || v != 21 {
		t.Fatalf("while measuring again: %v %v", v, ok)
	}
	// A paused or migrating domain is not asked, and an old value expires.
	if _, ok, kick := step(dirtyRec(2, 5, 21), dirtyMaxAge+4*time.Second, false); ok || kick {
		t.Fatalf("stale value %v or kick %v on a paused domain", ok, kick)
	}
	// No dirtyrate.calc_status (an old libvirt): never start one.
	key2 := dirtyKey("h", lv.Domain{Name: "old", ID: 1})
	d.mu.Lock()
	_, _, kick = d.dirtyRate(key2, parseRecord([]lv.TypedParam{tp("state.state", int32(1))}), true, t0)
	d.mu.Unlock()
	if kick {
		t.Fatal("started a calculation where the stats group is not answered")
	}
}

func TestDirtyRateGivesUp(t *testing.T) {
	unsupported := []error{
		lv.Error{Code: uint32(lv.ErrNoSupport), Message: "this function is not supported by the connection driver"},
		lv.Error{Code: uint32(lv.ErrInternalError), Message: "unable to execute QEMU command 'calc-dirty-rate': The command calc-dirty-rate has not been found"},
	}
	transient := []error{
		lv.Error{Code: uint32(lv.ErrInternalError), Message: "unable to execute QEMU command 'calc-dirty-rate': the dirty rate is already being measured."},
		lv.Error{Code: uint32(lv.ErrOperationInvalid), Message: "domain is not running"},
		errBusyJob,
		fmt.Errorf("%w: connection reset", hypervisor.ErrUnreachable),
	}
	for _, err := range unsupported {
		if !dirtyUnsupported(err) || dirtyTransient(err) {
			t.Errorf("%v: not read as unsupported", err)
		}
	}
	for _, err := range transient {
		if dirtyUnsupported(err) || !dirtyTransient(err) {
			t.Errorf("%v: not read as transient", err)
		}
	}

	d := newTestDriver(t)
	run := func(key string, errs ...error) (kicks int) {
		for i, err := range errs {
			d.mu.Lock()
			_, _, kick := d.dirtyRate(key, dirtyRec(0, 0, 0), true, time.Unix(int64(i), 0))
			d.mu.Unlock()
			if !kick {
				return kicks
			}
			kicks++
			d.dirtyStarted(key, err)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, _, kick := d.dirtyRate(key, dirtyRec(0, 0, 0), true, time.Unix(100, 0)); kick {
			kicks++
		}
		return kicks
	}
	if n := run("h/a#1", unsupported[1]); n != 1 {
		t.Errorf("unsupported: %d starts, want 1 and no more", n)
	}
	odd := lv.Error{Code: uint32(lv.ErrInternalError), Message: "something else"}
	if n := run("h/b#1", odd, odd, odd, odd); n != dirtyMaxFails {
		t.Errorf("unexplained failures: %d starts, want %d", n, dirtyMaxFails)
	}
	if n := run("h/c#1", transient[0], transient[1], transient[2], transient[0]); n != 5 {
		t.Errorf("transient failures: %d starts, want them all", n)
	}
	// A new QEMU process (new domain ID) gets a new chance; the old record goes.
	d.mu.Lock()
	d.forgetDirty("h", map[string]bool{"h/c#1": true})
	_, gone := d.dirty.doms["h/a#1"]
	d.mu.Unlock()
	if gone {
		t.Error("record of a vanished domain kept")
	}
}

func TestDataStart(t *testing.T) {
	var s dataStart
	if s.at() != 0 {
		t.Fatal("estimate without samples")
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, p := range []hypervisor.Progress{
		{Elapsed: ms(250)}, {Elapsed: ms(500)}, {Elapsed: ms(1000)},
		// 2 MiB sent at 20 MiB/s by 1250 ms: data started at 1150 ms.
		{Elapsed: ms(1250), DataProcessed: 2 << 20, MemBps: 20 << 20},
		{Elapsed: ms(1500), DataProcessed: 7 << 20, MemBps: 20 << 20},
	} {
		s.see(p)
	}
	if got := s.at(); got != ms(1150) {
		t.Errorf("data started at %v, want 1.15s", got)
	}
	// No rate known yet: half-way between the samples.
	s = dataStart{}
	s.see(hypervisor.Progress{Elapsed: ms(1000)})
	s.see(hypervisor.Progress{Elapsed: ms(1250), DataProcessed: 1})
	if got := s.at(); got != ms(1125) {
		t.Errorf("without a rate: %v", got)
	}
	// A rate that would put the start before the last idle sample is bounded.
	s = dataStart{}
	s.see(hypervisor.Progress{Elapsed: ms(1000)})
	s.see(hypervisor.Progress{Elapsed: ms(1250), DataProcessed: 100 << 20, MemBps: 1 << 20})
	if got := s.at(); got != ms(1000) {
		t.Errorf("bounded: %v", got)
	}
}
