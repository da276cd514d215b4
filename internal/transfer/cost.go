package transfer

import (
	"fmt"
	"math"

	"github.com/headroom/headroom/internal/model"
)

// Compression methods, as libvirt's compression parameter names them.
const (
	CompressNone   = ""
	CompressZstd   = "zstd"
	CompressZlib   = "zlib"
	CompressXBZRLE = "xbzrle"
)

// QEMU's defaults, which libvirt leaves alone unless told otherwise.
const (
	DefaultMaxDowntimeMs = 300 // downtime-limit
	DefaultLinkMiBps     = 1100
)

// Bounds on inputs: outside them nothing physical is being described, and they
// keep every output finite.
const (
	maxMiB        = 1 << 30 // 1 PiB of guest RAM
	maxRate       = 1 << 30 // MiB/s
	minRate       = 1e-3    // MiB/s
	maxDowntimeMs = 2000e3  // QEMU refuses more than 2000 s
	maxSetup      = 1e6
	pageMiB       = 4.0 / 1024 // 4 KiB target pages
)

// Model holds the constants of the cost model. Start from DefaultModel; a zero field
// that must be positive takes its default, while SetupSeconds and SwitchOverMs may
// be zero.
type Model struct {
	// PerStreamMiBps is what one TCP stream, fed by one QEMU thread, carries.
	PerStreamMiBps float64
	// SetupSeconds is the time before the first page moves: libvirt starting QEMU on
	// the target and connecting. A learned Link.SetupSeconds overrides it.
	SetupSeconds float64
	// SwitchOverMs is the pause on top of the last RAM: device state, stopping and
	// resuming vCPUs. QEMU's downtime-limit does not include it.
	SwitchOverMs float64
	// MaxRounds bounds the pre-copy passes; QEMU itself never gives up, so a
	// migration still going after this many is reported as not converging.
	MaxRounds int
	// Auto-converge: QEMU's cpu-throttle-initial, cpu-throttle-increment and
	// max-cpu-throttle (fractions), throttle-trigger-threshold, and the shortest
	// dirty-sync period it judges (1 s).
	ThrottleInitial   float64
	ThrottleIncrement float64
	ThrottleMax       float64
	ThrottleTrigger   float64
	ThrottlePeriod    float64
	// Per-channel input rates of multifd compression at level 1, MiB/s of RAM.
	ZstdMiBps float64
	ZlibMiBps float64
	// XBZRLEMiBps is the encode rate of the single migration thread.
	XBZRLEMiBps float64
	// XBZRLECacheMiB is QEMU's xbzrle-cache-size (64 MiB by default).
	XBZRLECacheMiB float64
	// Compressibility and XBZRLERatio are RAM bytes per wire byte when a job does
	// not say. 1 assumes nothing: compression then only costs CPU.
	Compressibility float64
	XBZRLERatio     float64
	// PostCopyAfter is how many pre-copy passes run before the switch to
	// post-copy; the libvirt driver switches after the first.
	PostCopyAfter int
	// PostcopyMultifd says QEMU accepts multifd with postcopy-ram (QEMU >= 10.0;
	// Debian 12's 7.2 refuses it).
	PostcopyMultifd bool
}

// DefaultModel returns the model with QEMU's defaults and typical rates.
func DefaultModel() Model {
	return Model{
		PerStreamMiBps:    500,
		SetupSeconds:      1,
		SwitchOverMs:      30,
		MaxRounds:         30,
		ThrottleInitial:   0.20,
		ThrottleIncrement: 0.10,
		ThrottleMax:       0.99,
		ThrottleTrigger:   0.50,
		ThrottlePeriod:    1,
		ZstdMiBps:         400,
		ZlibMiBps:         120,
		XBZRLEMiBps:       1000,
		XBZRLECacheMiB:    64,
		Compressibility:   1,
		XBZRLERatio:       1,
		PostCopyAfter:     1,
	}
}

func (m Model) withDefaults() Model {
	d := DefaultModel()
	pos := func(x *float64, def float64) {
		if !(*x > 0) || math.IsInf(*x, 0) {
			*x = def
		}
	}
	pos(&m.PerStreamMiBps, d.PerStreamMiBps)
	pos(&m.ThrottleInitial, d.ThrottleInitial)
	pos(&m.ThrottleIncrement, d.ThrottleIncrement)
	pos(&m.ThrottleMax, d.ThrottleMax)
	pos(&m.ThrottleTrigger, d.ThrottleTrigger)
	pos(&m.ThrottlePeriod, d.ThrottlePeriod)
	pos(&m.ZstdMiBps, d.ZstdMiBps)
	pos(&m.ZlibMiBps, d.ZlibMiBps)
	pos(&m.XBZRLEMiBps, d.XBZRLEMiBps)
	pos(&m.XBZRLECacheMiB, d.XBZRLECacheMiB)
	pos(&m.Compressibility, d.Compressibility)
	pos(&m.XBZRLERatio, d.XBZRLERatio)
	m.ThrottleMax = math.Min(m.ThrottleMax, 0.99)
	m.ThrottleInitial = math.Min(m.ThrottleInitial, m.ThrottleMax)
	m.SetupSeconds = clamp(m.SetupSeconds, 0, maxSetup)
	m.SwitchOverMs = clamp(m.SwitchOverMs, 0, maxDowntimeMs)
	if m.MaxRounds < 1 {
		m.MaxRounds = d.MaxRounds
	}
	m.MaxRounds = min(m.MaxRounds, 10000)
	m.PostCopyAfter = min(max(m.PostCopyAfter, 1), m.MaxRounds)
	return m
}

// Options are one set of migration options, in the model's terms.
type Options struct {
	Mode model.TransferMode // "" is pre-copy
	// Streams is the number of multifd channels; 1 (or less) is the classic
	// single migration stream.
	Streams     int
	Compression string
	// Ratio is RAM bytes per wire byte for Compression; 0 takes the model's.
	Ratio float64
	// CapMiBps is libvirt's bandwidth limit (QEMU max-bandwidth); 0 is none.
	CapMiBps      float64
	MaxDowntimeMs float64 // 0 is QEMU's 300 ms
	RDMA          bool
}

// Job is one migration to predict.
type Job struct {
	MemMiB float64
	// ZeroMiB is RAM holding zero pages, which the first pass sends as a flag
	// rather than a page (libvirt's memory_constant): a guest that never touched
	// its memory moves far less than MemMiB. 0 assumes none.
	ZeroMiB float64
	// WorkingSetMiB bounds the distinct pages the guest can dirty in one pass;
	// 0 means all of MemMiB (the pure geometric series).
	WorkingSetMiB float64
	DirtyMiBps    float64
	// DirtyMaxMiBps is what the guest would dirty with its vCPUs to itself.
	// Auto-converge's throttle takes vCPU time away, so a guest that dirties at a
	// steady pace in a small share of its CPU slows only once the throttle leaves
	// it less than that share. 0 means dirtying is CPU-bound (DirtyMiBps).
	DirtyMaxMiBps float64
	// LinkMiBps is the wire bandwidth of the path; 0 is DefaultLinkMiBps.
	LinkMiBps float64
	// SetupSeconds overrides the model's when positive.
	SetupSeconds float64
	Options
}

// Prediction is what the model expects of a job.
type Prediction struct {
	MemMiB  float64 // the RAM size the prediction used
	Seconds float64 // from the call to the VM running on the target
	// DataMiB is RAM sent, counting a page once per pass (>= MemMiB less
	// ZeroMiB); WireMiB is what crosses the network after compression.
	DataMiB    float64
	WireMiB    float64
	DowntimeMs float64
	// Rounds counts the passes that sent pages, the final one included.
	Rounds    int
	Converged bool
	// RateMiBps is the RAM rate of the first pass; WireMiBps its wire rate.
	RateMiBps float64
	WireMiBps float64
	// FinalThrottle is the auto-converge throttle at the end (0..0.99), and
	// ThrottledSeconds the vCPU time it took from the guest, per vCPU.
	FinalThrottle    float64
	ThrottledSeconds float64
	PostCopy         bool
	// FaultedMiB is the RAM left for the target to pull after a post-copy switch:
	// the worst case of what the guest faults on.
	FaultedMiB float64
	// CPUSeconds is the source's compression work.
	CPUSeconds float64
	// Why explains a failure to converge.
	Why string
}

// roundRates are the RAM rate, wire bytes per RAM byte and CPU seconds per RAM MiB
// of the first pass and of later ones, and the rate of a post-copy phase.
type roundRates struct {
	first, later     float64
	wfFirst, wfLater float64
	cpuFirst         float64
	cpuLater         float64
	post             float64
}

func (r roundRates) at(i int) (rate, wf, cpu float64) {
	if i == 0 {
		return r.first, r.wfFirst, r.cpuFirst
	}
	return r.later, r.wfLater, r.cpuLater
}

// rates works out the effective RAM rate: the link, capped by libvirt's bandwidth
// and by what the streams can carry, times the compression ratio where the
// compressing threads keep up.
func (m Model) rates(o Options, link, workingSet float64) roundRates {
	streams := float64(max(o.Streams, 1))
	wire := link
	if o.CapMiBps > 0 {
		wire = math.Min(wire, o.CapMiBps)
	}
	single, multi := wire, wire
	if !o.RDMA {
		// RDMA moves pages without a copying thread; TCP streams are CPU-bound.
		single = math.Min(wire, m.PerStreamMiBps)
		multi = math.Min(wire, streams*m.PerStreamMiBps)
	}
	r := roundRates{first: multi, later: multi, wfFirst: 1, wfLater: 1, post: single}
	ratio := func(def float64) float64 {
		x := o.Ratio
		if !(x > 0) {
			x = def
		}
		return clamp(x, 1, 100)
	}
	switch o.Compression {
	case CompressZstd, CompressZlib:
		cpu := m.ZstdMiBps
		if o.Compression == CompressZlib {
			cpu = m.ZlibMiBps
		}
		q := ratio(m.Compressibility)
		rate := math.Min(multi*q, streams*cpu)
		r.first, r.later = rate, rate
		r.wfFirst, r.wfLater = 1/q, 1/q
		r.cpuFirst, r.cpuLater = 1/cpu, 1/cpu
	case CompressXBZRLE:
		// QEMU starts XBZRLE after the first pass; a re-dirtied page is
		// delta-encoded only if it is still in the cache.
		q := ratio(m.XBZRLERatio)
		hit := 1.0
		if workingSet > 0 {
			hit = math.Min(1, m.XBZRLECacheMiB/workingSet)
		}
		f := hit/q + (1 - hit)
		r.later = math.Min(multi/f, m.XBZRLEMiBps)
		r.wfLater = f
		r.cpuLater = 1 / m.XBZRLEMiBps
	}
	return r
}

func (m Model) throttleUp(t float64) float64 {
	if t == 0 {
		return m.ThrottleInitial
	}
	return math.Min(t+m.ThrottleIncrement, m.ThrottleMax)
}

// Predict runs the pass-by-pass model of a QEMU live migration. Inputs outside
// physical ranges are clamped; every output is finite and non-negative.
func (m Model) Predict(j Job) Prediction {
	m = m.withDefaults()
	mem := clamp(j.MemMiB, 0, maxMiB)
	ws := j.WorkingSetMiB
	if !(ws > 0) || ws > mem {
		ws = mem
	}
	dirty := clamp(j.DirtyMiBps, 0, maxRate)
	dirtyMax := dirty
	if x := clamp(j.DirtyMaxMiBps, 0, maxRate); x > dirty {
		dirtyMax = x
	}
	link := j.LinkMiBps
	if !(link > 0) {
		link = DefaultLinkMiBps
	}
	link = clamp(link, minRate, maxRate)
	o := j.Options
	o.CapMiBps = clamp(o.CapMiBps, 0, maxRate)
	if o.CapMiBps > 0 {
		o.CapMiBps = math.Max(o.CapMiBps, minRate)
	}
	limitMs := o.MaxDowntimeMs
	if !(limitMs > 0) {
		limitMs = DefaultMaxDowntimeMs
	}
	limit := clamp(limitMs, 0, maxDowntimeMs) / 1000
	setup := m.SetupSeconds
	if j.SetupSeconds > 0 {
		setup = clamp(j.SetupSeconds, 0, maxSetup)
	}
	sw := m.SwitchOverMs / 1000
	rr := m.rates(o, link, ws)
	// QEMU lifts max-bandwidth for the stop-and-copy, though it judged the
	// remainder against the capped rate: the pause runs at the uncapped one.
	uncapped := o
	uncapped.CapMiBps = 0
	rrStop := m.rates(uncapped, link, ws)
	auto := o.Mode == model.AutoConverge
	post := o.Mode == model.PostCopy

	p := Prediction{MemMiB: mem, RateMiBps: rr.first, WireMiBps: rr.first * rr.wfFirst}
	t := setup
	v := mem - clamp(j.ZeroMiB, 0, mem) // pages still to send
	var throttle, perT, perX, perD float64
	high := 0
	for i := 0; ; i++ {
		rate, wf, cpu := rr.at(i)
		stopRate, _, _ := rrStop.at(i)
		if v/rate <= limit {
			// QEMU stops the guest once what is left fits the downtime limit.
			if v > 0 {
				p.Rounds++
			}
			p.DataMiB += v
			p.WireMiB += v * wf
			p.CPUSeconds += v * cpu
			down := v/stopRate + sw
			t += down
			p.DowntimeMs = down * 1000
			p.Converged = true
			break
		}
		if post && i >= m.PostCopyAfter {
			// The guest moves now; the target pulls the rest over one channel,
			// without compression. Only the discard bitmap (a bit a page) and
			// device state cross during the pause.
			down := sw + v/pageMiB/8/(1<<20)/rr.post
			t += down + v/rr.post
			p.DataMiB += v
			p.WireMiB += v
			p.FaultedMiB = v
			p.Rounds++
			p.DowntimeMs = down * 1000
			p.Converged = true
			p.PostCopy = true
			break
		}
		if i >= m.MaxRounds {
			// A forced switch-over now would pause the guest this long.
			p.DowntimeMs = (v/stopRate + sw) * 1000
			eff := throttled(dirty, dirtyMax, throttle)
			if eff >= rate {
				p.Why = fmt.Sprintf("dirty rate %.0f MiB/s >= transfer rate %.0f MiB/s", eff, rate)
			} else {
				p.Why = fmt.Sprintf("%d passes and %.0f MiB still dirty > %.0f MiB the downtime limit allows",
					m.MaxRounds, v, rate*limit)
			}
			break
		}
		d := v / rate
		t += d
		p.DataMiB += v
		p.WireMiB += v * wf
		p.CPUSeconds += v * cpu
		p.ThrottledSeconds += throttle * d
		p.Rounds++
		next := math.Min(ws, throttled(dirty, dirtyMax, throttle)*d)
		if auto {
			// QEMU's migration_trigger_throttle: a sync period (>= 1 s) in which
			// the guest dirtied more than the trigger share of what was sent counts
			// as high; every second high period raises the throttle.
			perT += d
			perX += v * wf
			perD += next
			if perT >= m.ThrottlePeriod {
				if perD > m.ThrottleTrigger*perX {
					high++
					if high >= 2 {
						high = 0
						throttle = m.throttleUp(throttle)
					}
				}
				perT, perX, perD = 0, 0, 0
			}
		}
		v = next
	}
	p.Seconds = t
	p.FinalThrottle = throttle
	return p
}

// throttled is the dirty rate under a vCPU throttle: the guest keeps its pace
// while the CPU left to it covers what that pace takes (dirty/dirtyMax of it).
func throttled(dirty, dirtyMax, throttle float64) float64 {
	return math.Min(dirty, (1-throttle)*dirtyMax)
}

// PredictSeconds is the cheap estimate the coordinator uses for lead time and
// cost-benefit: pre-copy with enough streams to fill the link, auto-converge if
// that does not converge. It ignores post-copy and compression, which need policy
// and knowledge of the guest.
func (m Model) PredictSeconds(memMiB, dirtyMiBps float64, link Link) float64 {
	m = m.withDefaults()
	l := link.MiBps
	if !(l > 0) {
		l = DefaultLinkMiBps
	}
	streams := 1
	for streams < 8 && float64(streams)*m.PerStreamMiBps < l {
		streams *= 2
	}
	j := Job{MemMiB: memMiB, DirtyMiBps: dirtyMiBps, LinkMiBps: l, SetupSeconds: link.SetupSeconds,
		Options: Options{Mode: model.PreCopy, Streams: streams}}
	p := m.Predict(j)
	if !p.Converged {
		j.Mode = model.AutoConverge
		p = m.Predict(j)
	}
	return p.Seconds
}

// PredictSeconds is Model.PredictSeconds with DefaultModel.
func PredictSeconds(memMiB, dirtyMiBps float64, link Link) float64 {
	return defaultModel.PredictSeconds(memMiB, dirtyMiBps, link)
}

var defaultModel = DefaultModel()

// Validate reports why QEMU or libvirt would refuse a set of options.
func (m Model) Validate(o Options) error {
	switch o.Mode {
	case "", model.PreCopy, model.AutoConverge, model.PostCopy:
	default:
		return fmt.Errorf("unknown mode %q", o.Mode)
	}
	multifd := o.Streams > 1
	switch o.Compression {
	case CompressNone:
	case CompressZstd, CompressZlib:
		if !multifd {
			return fmt.Errorf("%s compression runs on multifd channels: needs 2+ streams", o.Compression)
		}
	case CompressXBZRLE:
		if multifd {
			return fmt.Errorf("QEMU refuses xbzrle with multifd")
		}
	default:
		return fmt.Errorf("unknown compression %q", o.Compression)
	}
	if o.Mode == model.PostCopy {
		if o.Compression == CompressXBZRLE {
			return fmt.Errorf("QEMU refuses post-copy with xbzrle")
		}
		if multifd && !m.PostcopyMultifd {
			return fmt.Errorf("this QEMU refuses post-copy with multifd")
		}
	}
	if o.RDMA {
		switch {
		case multifd:
			return fmt.Errorf("QEMU refuses multifd over RDMA")
		case o.Compression != CompressNone:
			return fmt.Errorf("QEMU refuses compression over RDMA")
		case o.Mode == model.PostCopy:
			return fmt.Errorf("QEMU refuses post-copy over RDMA")
		}
	}
	return nil
}

// clamp maps x into [lo, hi], NaN to lo.
func clamp(x, lo, hi float64) float64 {
	if !(x >= lo) {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}
