package transfer

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// Pair is a (source, target) host pair; links are learned per direction.
type Pair struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

func (p Pair) String() string { return p.Source + "->" + p.Target }

// Link is what is known about one pair's migration path.
type Link struct {
	// MiBps is the wire bandwidth a migration can get.
	MiBps float64 `json:"mibps"`
	// SetupSeconds is the time a migration spends not moving data; 0 leaves it to
	// the model.
	SetupSeconds float64 `json:"setup_seconds,omitempty"`
	// Samples counts the migrations learned from.
	Samples int `json:"samples"`
}

// LinkConfig sets the prior and the learning rate of link estimates.
type LinkConfig struct {
	// PriorMiBps is the bandwidth of a pair never seen (default 1100, 10 GbE).
	PriorMiBps        float64 `yaml:"prior_mibps" json:"prior_mibps"`
	PriorSetupSeconds float64 `yaml:"prior_setup_seconds" json:"prior_setup_seconds"`
	// PriorWeight is how many migrations the prior is worth (default 2): early
	// samples move the estimate more, like a running mean, until Alpha takes over.
	PriorWeight float64 `yaml:"prior_weight" json:"prior_weight"`
	// Alpha is the EWMA weight of a new sample once the prior is spent (0.25).
	Alpha float64 `yaml:"alpha" json:"alpha"`
	// MaxStep bounds one sample to [estimate/MaxStep, estimate*MaxStep] (4), so a
	// botched measurement cannot wreck the estimate.
	MaxStep float64 `yaml:"max_step" json:"max_step"`
	// History is how many prediction records each pair keeps (64).
	History int `yaml:"history" json:"history"`
	// PerStreamMiBps must match the Model's: it tells when a stream, not the
	// link, limited a migration.
	PerStreamMiBps float64 `yaml:"per_stream_mibps" json:"per_stream_mibps"`
}

// DefaultLinkConfig returns the defaults.
func DefaultLinkConfig() LinkConfig {
	return LinkConfig{PriorMiBps: DefaultLinkMiBps, PriorSetupSeconds: 1, PriorWeight: 2,
		Alpha: 0.25, MaxStep: 4, History: 64, PerStreamMiBps: DefaultModel().PerStreamMiBps}
}

func (c LinkConfig) withDefaults() LinkConfig {
	d := DefaultLinkConfig()
	pos := func(x *float64, def float64) {
		if !(*x > 0) || math.IsInf(*x, 0) {
			*x = def
		}
	}
	pos(&c.PriorMiBps, d.PriorMiBps)
	pos(&c.PriorSetupSeconds, d.PriorSetupSeconds)
	pos(&c.PriorWeight, d.PriorWeight)
	pos(&c.Alpha, d.Alpha)
	pos(&c.PerStreamMiBps, d.PerStreamMiBps)
	c.Alpha = math.Min(c.Alpha, 1)
	if !(c.MaxStep > 1) || math.IsInf(c.MaxStep, 0) {
		c.MaxStep = d.MaxStep
	}
	if c.History <= 0 {
		c.History = d.History
	}
	return c
}

// Measured is what a finished (or failed) migration reported.
type Measured struct {
	// Seconds runs from the Migrate call to the end, as Prediction.Seconds does.
	Seconds float64 `json:"seconds"`
	// SetupSeconds is the part of Seconds in which no data moved.
	SetupSeconds float64 `json:"setup_seconds"`
	DataMiB      float64 `json:"data_mib"` // on the wire
	DowntimeMs   float64 `json:"downtime_ms"`
	// MiBps is the hypervisor's last transfer rate; used when times are missing.
	MiBps     float64 `json:"mibps,omitempty"`
	Completed bool    `json:"completed"`
}

// MeasuredFrom reads a driver's Result: the controller's wall time if it has one,
// QEMU's job clock otherwise; data moved over the job clock less QEMU's setup.
func MeasuredFrom(r hypervisor.Result) Measured {
	const mib = 1 << 20
	elapsed, wall, setup := r.Elapsed.Seconds(), r.Wall.Seconds(), r.Setup.Seconds()
	m := Measured{
		Seconds:    wall,
		DataMiB:    float64(r.DataProcessed) / mib,
		DowntimeMs: float64(r.Downtime.Microseconds()) / 1000,
		MiBps:      r.MemBps / mib,
		Completed:  r.Phase == hypervisor.PhaseCompleted,
	}
	if !(m.Seconds > 0) {
		m.Seconds = elapsed
	}
	m.SetupSeconds = setup
	if active := elapsed - setup; elapsed > 0 && active > 0 && active <= m.Seconds {
		m.SetupSeconds = m.Seconds - active
	}
	return m
}

// RateMiBps is the wire rate the migration achieved while moving data.
func (m Measured) RateMiBps() float64 {
	if active := m.Seconds - m.SetupSeconds; active > 0 && m.DataMiB > 0 {
		return m.DataMiB / active
	}
	return m.MiBps
}

// Record is one migration's predicted and measured figures.
type Record struct {
	Mode           model.TransferMode `json:"mode"`
	Streams        int                `json:"streams"`
	Compression    string             `json:"compression,omitempty"`
	PredSeconds    float64            `json:"pred_seconds"`
	MeasSeconds    float64            `json:"meas_seconds"`
	PredDataMiB    float64            `json:"pred_data_mib"`
	MeasDataMiB    float64            `json:"meas_data_mib"`
	PredDowntimeMs float64            `json:"pred_downtime_ms"`
	MeasDowntimeMs float64            `json:"meas_downtime_ms"`
	Completed      bool               `json:"completed"`
	// RateMiBps is the measured wire rate; Censored says a known cap (libvirt's
	// bandwidth, the streams, compression) may have held it below the link, so it
	// could only raise the estimate.
	RateMiBps  float64 `json:"rate_mibps"`
	Censored   bool    `json:"censored,omitempty"`
	LinkBefore float64 `json:"link_before"`
	LinkAfter  float64 `json:"link_after"`
}

// Estimates holds the learned link of every host pair and a bounded history of
// prediction errors. Safe for concurrent use.
type Estimates struct {
	cfg   LinkConfig
	mu    sync.Mutex
	pairs map[Pair]*pairState
}

type pairState struct {
	link Link
	hist []Record // ring, oldest at next once full
	next int
}

// NewEstimates returns empty estimates; zero fields of cfg take their defaults.
func NewEstimates(cfg LinkConfig) *Estimates {
	return &Estimates{cfg: cfg.withDefaults(), pairs: map[Pair]*pairState{}}
}

func (e *Estimates) state(p Pair) *pairState {
	s := e.pairs[p]
	if s == nil {
		s = &pairState{link: Link{MiBps: e.cfg.PriorMiBps, SetupSeconds: e.cfg.PriorSetupSeconds}}
		e.pairs[p] = s
	}
	return s
}

// Link returns the pair's estimate, the prior if nothing was learned.
func (e *Estimates) Link(p Pair) Link {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.pairs[p]; s != nil {
		return s.link
	}
	return Link{MiBps: e.cfg.PriorMiBps, SetupSeconds: e.cfg.PriorSetupSeconds}
}

// Set seeds a pair's estimate, e.g. from a known link speed.
func (e *Estimates) Set(p Pair, l Link) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.state(p)
	if l.MiBps > 0 && !math.IsInf(l.MiBps, 0) {
		s.link.MiBps = l.MiBps
	}
	if l.SetupSeconds > 0 && !math.IsInf(l.SetupSeconds, 0) {
		s.link.SetupSeconds = l.SetupSeconds
	}
	s.link.Samples = max(l.Samples, 0)
}

// wireCap is the lowest known limit the options put on the wire rate, other than
// the link; 0 if none. Compression may be CPU-bound at a rate we cannot know
// here, so it counts as a cap of its own.
func (e *Estimates) wireCap(o model.StateTransferOptions) (float64, bool) {
	if c := o.Compression; c != "" && c != "none" {
		return 0, true
	}
	limit := math.Inf(1)
	if o.BandwidthMiBps > 0 {
		limit = o.BandwidthMiBps
	}
	if !strings.HasPrefix(o.MigrateURI, "rdma://") {
		limit = math.Min(limit, float64(max(o.ParallelStreams, 1))*e.cfg.PerStreamMiBps)
	}
	if math.IsInf(limit, 1) {
		return 0, false
	}
	return limit, false
}

// Learn records a migration run with options pred (carrying its predicted
// figures) and moves the pair's estimates toward what it measured. A rate that
// reached a known cap only tells the link is at least that fast, so it can
// raise the estimate but never lower it. It reports false, learning nothing, if
// the measurement has no usable rate.
func (e *Estimates) Learn(p Pair, pred model.StateTransferOptions, m Measured) (Record, bool) {
	rate := m.RateMiBps()
	if !(rate > 0) || math.IsInf(rate, 0) {
		return Record{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.state(p)
	before := s.link.MiBps
	// A cap at or above the estimate was not expected to bind: the link was, and
	// a slow rate says the link is slow.
	limit, censored := e.wireCap(pred)
	censored = censored || limit > 0 && limit < before && rate >= 0.9*limit
	w := math.Max(e.cfg.Alpha, 1/(float64(s.link.Samples)+e.cfg.PriorWeight+1))
	sample := clamp(rate, before/e.cfg.MaxStep, before*e.cfg.MaxStep)
	if !censored || sample > before {
		s.link.MiBps = before + w*(sample-before)
	}
	if m.SetupSeconds >= 0 && m.SetupSeconds < m.Seconds {
		// Clamped like the rate; the floor keeps a zero setup from sticking.
		cur := math.Max(s.link.SetupSeconds, 0.01)
		st := clamp(m.SetupSeconds, cur/e.cfg.MaxStep, cur*e.cfg.MaxStep)
		s.link.SetupSeconds = cur + w*(st-cur)
	}
	s.link.Samples++
	r := Record{
		Mode: pred.Mode, Streams: pred.ParallelStreams, Compression: pred.Compression,
		PredSeconds: pred.PredictedSeconds, MeasSeconds: m.Seconds,
		PredDataMiB: pred.PredictedDataMiB, MeasDataMiB: m.DataMiB,
		PredDowntimeMs: pred.PredictedDowntime, MeasDowntimeMs: m.DowntimeMs,
		Completed: m.Completed, RateMiBps: rate, Censored: censored,
		LinkBefore: before, LinkAfter: s.link.MiBps,
	}
	if len(s.hist) < e.cfg.History {
		s.hist = append(s.hist, r)
	} else {
		s.hist[s.next] = r
		s.next = (s.next + 1) % len(s.hist)
	}
	return r, true
}

// Records returns a pair's history, oldest first.
func (e *Estimates) Records(p Pair) []Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.pairs[p]
	if s == nil {
		return nil
	}
	out := make([]Record, 0, len(s.hist))
	out = append(out, s.hist[s.next:]...)
	return append(out, s.hist[:s.next]...)
}

// Pairs lists the pairs with estimates, sorted.
func (e *Estimates) Pairs() []Pair {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Pair, 0, len(e.pairs))
	for p := range e.pairs {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Pair) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Target, b.Target))
	})
	return out
}

// ErrorSummary is how far predictions were off for completed migrations.
// Relative errors are (predicted - measured) / measured: a positive bias means
// the model was pessimistic. Downtime errors are absolute, in ms, since a few
// ms against a few ms makes a meaningless ratio.
type ErrorSummary struct {
	N               int     `json:"n"`
	SecondsMAPE     float64 `json:"seconds_mape"`
	SecondsBias     float64 `json:"seconds_bias"`
	DataMAPE        float64 `json:"data_mape"`
	DataBias        float64 `json:"data_bias"`
	DowntimeMAEMs   float64 `json:"downtime_mae_ms"`
	DowntimeBiasMs  float64 `json:"downtime_bias_ms"`
	LinkMiBps       float64 `json:"link_mibps"`
	CensoredSamples int     `json:"censored_samples"`
}

// Errors summarises a pair's history.
func (e *Estimates) Errors(p Pair) ErrorSummary {
	recs := e.Records(p)
	s := ErrorSummary{LinkMiBps: e.Link(p).MiBps}
	var nd int
	for _, r := range recs {
		if r.Censored {
			s.CensoredSamples++
		}
		if !r.Completed || !(r.MeasSeconds > 0) {
			continue
		}
		s.N++
		es := (r.PredSeconds - r.MeasSeconds) / r.MeasSeconds
		s.SecondsMAPE += math.Abs(es)
		s.SecondsBias += es
		if r.MeasDataMiB > 0 {
			ed := (r.PredDataMiB - r.MeasDataMiB) / r.MeasDataMiB
			s.DataMAPE += math.Abs(ed)
			s.DataBias += ed
			nd++
		}
		et := r.PredDowntimeMs - r.MeasDowntimeMs
		s.DowntimeMAEMs += math.Abs(et)
		s.DowntimeBiasMs += et
	}
	if s.N > 0 {
		n := float64(s.N)
		s.SecondsMAPE /= n
		s.SecondsBias /= n
		s.DowntimeMAEMs /= n
		s.DowntimeBiasMs /= n
	}
	if nd > 0 {
		s.DataMAPE /= float64(nd)
		s.DataBias /= float64(nd)
	}
	return s
}
