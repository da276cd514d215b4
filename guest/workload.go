package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Trace is what the guest replays: a CPU duty cycle and a memory dirty rate per step.
type Trace struct {
	CPU       []float64     // target utilisation of one vCPU per step, 0..1
	DirtyRate []float64     // MiB/s of pages dirtied per step (the last value repeats)
	Step      time.Duration // length of one step
	DirtyMiB  int           // size of the buffer whose pages are dirtied
	Loop      bool          // restart the trace at the end (else hold the last step)
	// Per step, like DirtyRate (the last value repeats; none is 0): the memory
	// held allocated and touched, in MiB; the rate of writes to the virtio disk
	// and of frames sent on the virtio NIC, in KB/s (1024 bytes).
	MemMiB   []float64
	DiskKBps []float64
	NetKBps  []float64
}

// Levels is what the trace asks for at one moment.
type Levels struct {
	Step                      int
	CPU, DirtyRate            float64
	MemMiB, DiskKBps, NetKBps float64
}

// LevelsAt returns every level of the trace at elapsed time t.
func (tr *Trace) LevelsAt(t time.Duration) Levels {
	n := max(len(tr.CPU), len(tr.DirtyRate), len(tr.MemMiB), len(tr.DiskKBps), len(tr.NetKBps))
	if n == 0 {
		return Levels{}
	}
	step := 0
	if tr.Step > 0 {
		step = int(t / tr.Step)
	}
	if tr.Loop {
		step %= n
	} else if step >= n {
		step = n - 1
	}
	return Levels{
		Step: step, CPU: pick(tr.CPU, step), DirtyRate: pick(tr.DirtyRate, step),
		MemMiB: pick(tr.MemMiB, step), DiskKBps: pick(tr.DiskKBps, step), NetKBps: pick(tr.NetKBps, step),
	}
}

// DefaultTrace is the embedded trace used when the kernel command line names none:
// a mild ramp that a host can see, with enough dirtying to make pre-copy iterate.
func DefaultTrace() Trace {
	return Trace{
		CPU:       []float64{0.3, 0.6, 0.9, 0.6},
		DirtyRate: []float64{20},
		Step:      10 * time.Second,
		DirtyMiB:  32,
		Loop:      true,
	}
}

// At returns the CPU target and dirty rate at elapsed time t.
func (tr *Trace) At(t time.Duration) (cpu, rate float64, step int) {
	lv := tr.LevelsAt(t)
	return lv.CPU, lv.DirtyRate, lv.Step
}

// pick returns s[i], holding the last value when s is shorter than the trace.
func pick(s []float64, i int) float64 {
	if len(s) == 0 {
		return 0
	}
	if i >= len(s) {
		return s[len(s)-1]
	}
	return s[i]
}

// Apply sets one "key=value" option. Keys are the same on the kernel command line
// (with a "headroom." prefix) and on the steering port.
func (tr *Trace) Apply(kv string) error {
	k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
	if !ok {
		return fmt.Errorf("want key=value, got %q", kv)
	}
	k = strings.TrimPrefix(k, "headroom.")
	switch k {
	case "cpu":
		xs, err := floats(v, 0, 1)
		if err != nil {
			return fmt.Errorf("cpu: %w", err)
		}
		tr.CPU = xs
	case "dirty_rate":
		xs, err := floats(v, 0, 1e6)
		if err != nil {
			return fmt.Errorf("dirty_rate: %w", err)
		}
		tr.DirtyRate = xs
	case "mem_mib":
		xs, err := floats(v, 0, 1<<16)
		if err != nil {
			return fmt.Errorf("mem_mib: %w", err)
		}
		tr.MemMiB = xs
	case "disk_kbps":
		xs, err := floats(v, 0, 1e7)
		if err != nil {
			return fmt.Errorf("disk_kbps: %w", err)
		}
		tr.DiskKBps = xs
	case "net_kbps":
		xs, err := floats(v, 0, 1e7)
		if err != nil {
			return fmt.Errorf("net_kbps: %w", err)
		}
		tr.NetKBps = xs
	case "step":
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("step: bad duration %q", v)
		}
		tr.Step = d
	case "dirty_mib":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1<<16 {
			return fmt.Errorf("dirty_mib: bad size %q", v)
		}
		tr.DirtyMiB = n
	case "loop":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("loop: %w", err)
		}
		tr.Loop = b
	default:
		return fmt.Errorf("unknown key %q", k)
	}
	return nil
}

func floats(s string, lo, hi float64) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, err
		}
		if !(x >= lo && x <= hi) { // also refuses NaN
			return nil, fmt.Errorf("%v outside [%v, %v]", x, lo, hi)
		}
		out = append(out, x)
	}
	return out, nil
}

// ParseCmdline reads the headroom.* options of a kernel command line over base.
// Unknown headroom.* keys are reported, other kernel options are ignored.
func ParseCmdline(cmdline string, base Trace) (Trace, []error) {
	tr := base
	var errs []error
	for _, f := range strings.Fields(cmdline) {
		if !strings.HasPrefix(f, "headroom.") {
			continue
		}
		if err := tr.Apply(f); err != nil {
			errs = append(errs, err)
		}
	}
	return tr, errs
}

const slice = 100 * time.Millisecond

// Engine replays a Trace: each 100 ms slice it dirties its share of pages, then
// spins until util*slice of busy time is spent, then sleeps for the rest.
type Engine struct {
	mu    sync.Mutex
	tr    Trace
	start time.Time // start of the trace clock; reset when the trace changes

	buf  []byte
	pos  int      // next page to dirty
	gen  uint64   // changes what is written so a page's content really changes
	last []uint64 // per page, the gen last written there (0: none yet)
	seed uint64

	// Counters read by the progress printer.
	busy    time.Duration
	dirtied int64 // bytes of pages dirtied
	iter    int64 // completed passes over the buffer
	slices  int64
	bad     int64 // pages that did not hold what was last written: lost writes

	io ioCounters // the memory, disk and network workers' (devices.go)
}

const pageSize = 4096

// NewEngine returns an engine replaying tr from now.
func NewEngine(tr Trace, now time.Time) *Engine {
	e := &Engine{start: now, seed: 0x9e3779b97f4a7c15}
	e.set(tr, now)
	return e
}

// Set replaces the trace and restarts its clock.
func (e *Engine) Set(tr Trace, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.set(tr, now)
}

func (e *Engine) set(tr Trace, now time.Time) {
	e.tr = tr
	e.start = now
	if want := tr.DirtyMiB << 20; len(e.buf) != want {
		e.buf = make([]byte, want)
		e.last = make([]uint64, want/pageSize)
		e.pos = 0
		// Fill with noise so no page is a zero page: QEMU sends zero pages for
		// almost nothing, which would make the buffer invisible to migration.
		x := e.seed
		for i := 0; i+8 <= len(e.buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			putU64(e.buf[i:], x)
		}
		e.seed = x
	}
}

// Trace returns a copy of the current trace.
func (e *Engine) Trace() Trace {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tr
}

func putU64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	b[4], b[5], b[6], b[7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
}

// word is what generation g writes, and where in its page.
func word(g uint64) (off int, v uint64) {
	return int(g%(pageSize/8)) * 8, g*0x9e3779b97f4a7c15 | 1
}

// dirty writes one word into each of n pages, moving round the buffer. Before each
// write it checks the page still holds the previous one: a live migration that
// loses a dirtied page shows up as a "bad" count instead of silently.
func (e *Engine) dirty(n int) {
	pages := len(e.buf) / pageSize
	if pages == 0 {
		return
	}
	for range n {
		if g := e.last[e.pos]; g != 0 {
			off, v := word(g)
			if getU64(e.buf[e.pos*pageSize+off:]) != v {
				e.bad++
			}
		}
		e.gen++
		off, v := word(e.gen)
		putU64(e.buf[e.pos*pageSize+off:], v)
		e.last[e.pos] = e.gen
		e.pos++
		if e.pos == pages {
			e.pos = 0
			e.iter++
		}
	}
	e.dirtied += int64(n) * pageSize
}

// Slice runs one 100 ms slice starting at now and returns when it is over.
func (e *Engine) Slice(now time.Time, clock func() time.Time, sleep func(time.Duration)) {
	e.mu.Lock()
	cpu, rate, _ := e.tr.At(now.Sub(e.start))
	pages := int(rate * float64(1<<20) / pageSize * slice.Seconds())
	e.dirty(pages)
	e.mu.Unlock()

	deadline := now.Add(time.Duration(cpu * float64(slice)))
	t := clock()
	for t.Before(deadline) {
		// Spin: a few hundred multiply-adds between clock reads.
		x := uint64(t.UnixNano())
		for i := range 512 {
			x = x*6364136223846793005 + uint64(i)
		}
		sink = x
		t = clock()
	}
	e.mu.Lock()
	e.busy += t.Sub(now)
	e.slices++
	e.mu.Unlock()
	if rest := now.Add(slice).Sub(t); rest > 0 {
		sleep(rest)
	}
}

var sink uint64

func getU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// Counters is a snapshot of the engine's work so far.
type Counters struct {
	Busy    time.Duration
	Dirtied int64
	Iter    int64
	Slices  int64
	Bad     int64
	MemMiB  int64 // held now
	DiskB   int64 // written to the disk
	NetB    int64 // sent on the NIC
}

// Counters returns the work done so far.
func (e *Engine) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Counters{e.busy, e.dirtied, e.iter, e.slices, e.bad,
		e.io.memMiB.Load(), e.io.diskB.Load(), e.io.netB.Load()}
}

// Status describes the work since prev, dt ago, e.g.
// "step=1 cpu=0.63 want=0.60 dirty=32MiB rate=20.0MiB/s iter=12 slices=120 bad=0
// mem=64MiB disk=512KB/s net=0KB/s io_errors=0".
func (e *Engine) Status(now time.Time, prev Counters, dt time.Duration) string {
	c := e.Counters()
	e.mu.Lock()
	want, _, step := e.tr.At(now.Sub(e.start))
	mib := e.tr.DirtyMiB
	e.mu.Unlock()
	cpu, rate, disk, nw := 0.0, 0.0, 0.0, 0.0
	if dt > 0 {
		cpu = float64(c.Busy-prev.Busy) / float64(dt)
		rate = float64(c.Dirtied-prev.Dirtied) / float64(1<<20) / dt.Seconds()
		disk = float64(c.DiskB-prev.DiskB) / 1024 / dt.Seconds()
		nw = float64(c.NetB-prev.NetB) / 1024 / dt.Seconds()
	}
	return fmt.Sprintf("step=%d cpu=%.2f want=%.2f dirty=%dMiB rate=%.1fMiB/s iter=%d slices=%d bad=%d mem=%dMiB disk=%.0fKB/s net=%.0fKB/s io_errors=%d",
		step, cpu, want, mib, rate, c.Iter, c.Slices, c.Bad, c.MemMiB, disk, nw, e.io.ioErrs.Load())
}
