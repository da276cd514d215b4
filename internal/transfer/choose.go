package transfer

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"

	"github.com/headroom/headroom/internal/model"
)

// Host labels the chooser reads.
const (
	// LabelRDMA advertises an RDMA-capable migration address ("true" means the
	// host's LabelMigrateAddr).
	LabelRDMA = "headroom/rdma"
	// LabelMigrateAddr is the address other hosts send migration streams to.
	LabelMigrateAddr = "headroom/migrate-addr"
)

// Policy is what a VM's group allows a migration to do.
type Policy struct {
	// MaxDowntimeMs is QEMU's downtime-limit for the group; 0 is 300 ms.
	MaxDowntimeMs float64
	// PostCopy allows post-copy, which bounds the time but leaves the VM running
	// on two hosts' memory until done: lose either and the VM is lost.
	PostCopy bool
	// MaxBandwidthShare caps a migration at this share of the link, in (0, 1);
	// 0 or 1 and above means no cap.
	MaxBandwidthShare float64
	// MaxBandwidthMiBps caps it at a fixed rate; 0 is none. With both, the lower
	// binds.
	MaxBandwidthMiBps float64
}

// Input is one VM's migration to choose options for.
type Input struct {
	VM     string
	MemMiB float64
	// ZeroMiB is RAM known to hold zero pages (see Job.ZeroMiB); 0 is none.
	ZeroMiB float64
	// WorkingSetMiB bounds the pages dirtied per pass; 0 is MemMiB.
	WorkingSetMiB float64
	// DirtyMiBps is the mean dirty rate predicted over the migration window and
	// DirtyUpperMiBps its upper bound (the mean if lower).
	DirtyMiBps      float64
	DirtyUpperMiBps float64
	// DirtyMaxMiBps is what the guest would dirty unthrottled (see
	// Job.DirtyMaxMiBps); 0 takes dirtying as CPU-bound.
	DirtyMaxMiBps float64
	// Compressibility (zstd) and XBZRLERatio (re-dirtied pages) are RAM bytes per
	// wire byte; 0 takes the model's.
	Compressibility float64
	XBZRLERatio     float64
	Policy          Policy
	Link            Link
	SourceLabels    map[string]string
	TargetLabels    map[string]string
}

// VMInput fills an Input's size and dirty rate from a snapshot VM. The drivers
// fill Size.Mem with MiB; DirtyRate is MB/s.
func VMInput(v model.VM) Input {
	d := v.DirtyRate / 1.048576
	return Input{VM: v.ID, MemMiB: v.Size.Mem, DirtyMiBps: d, DirtyUpperMiBps: d}
}

// Chooser picks migration options with a Model.
type Chooser struct {
	Model Model
	// TieMargin is how close in time (a fraction, default 0.05) a gentler option
	// must be to the fastest to win: no throttling, no post-copy, fewer streams,
	// no compression.
	TieMargin float64
	// RDMAPort goes into rdma:// URIs without one; 0 lets libvirt pick from its
	// migration port range, so concurrent migrations to a host do not collide.
	RDMAPort int
	// Streams are the stream counts tried; nil is 1, 2, 4, 8.
	Streams []int
}

// NewChooser returns a chooser with model m.
func NewChooser(m Model) Chooser { return Chooser{Model: m} }

// Candidate is one option set the chooser considered.
type Candidate struct {
	Name      string                     `json:"name"`
	Transport string                     `json:"transport"` // "tcp" or "rdma"
	Options   model.StateTransferOptions `json:"options"`
	// Mean is the prediction at the mean dirty rate, Upper at the upper bound.
	Mean     Prediction `json:"mean"`
	Upper    Prediction `json:"upper"`
	Valid    bool       `json:"valid"`
	Feasible bool       `json:"feasible"`
	Verdict  string     `json:"verdict"`
}

// Explanation lists every candidate with its prediction and why it won or lost.
type Explanation struct {
	VM              string      `json:"vm,omitempty"`
	MemMiB          float64     `json:"mem_mib"`
	ZeroMiB         float64     `json:"zero_mib,omitempty"`
	WorkingSetMiB   float64     `json:"working_set_mib,omitempty"`
	DirtyMiBps      float64     `json:"dirty_mibps"`
	DirtyUpperMiBps float64     `json:"dirty_upper_mibps"`
	DirtyMaxMiBps   float64     `json:"dirty_max_mibps,omitempty"`
	LinkMiBps       float64     `json:"link_mibps"`
	CapMiBps        float64     `json:"cap_mibps,omitempty"`
	MaxDowntimeMs   float64     `json:"max_downtime_ms"`
	Candidates      []Candidate `json:"candidates"`
	Chosen          int         `json:"chosen"` // index into Candidates
	Summary         string      `json:"summary"`
}

func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %.0f MiB", e.VM, e.MemMiB)
	if e.ZeroMiB > 0 {
		fmt.Fprintf(&b, " (%.0f MiB zero pages)", e.ZeroMiB)
	}
	fmt.Fprintf(&b, ", dirty %.1f (upper %.1f) MiB/s", e.DirtyMiBps, e.DirtyUpperMiBps)
	if e.WorkingSetMiB > 0 {
		fmt.Fprintf(&b, " over %.0f MiB", e.WorkingSetMiB)
	}
	if e.DirtyMaxMiBps > 0 {
		fmt.Fprintf(&b, " (%.0f MiB/s unthrottled)", e.DirtyMaxMiBps)
	}
	fmt.Fprintf(&b, ", link %.0f MiB/s", e.LinkMiBps)
	if e.CapMiBps > 0 {
		fmt.Fprintf(&b, ", cap %.0f MiB/s", e.CapMiBps)
	}
	fmt.Fprintf(&b, ", downtime limit %.0f ms\n%s\n", e.MaxDowntimeMs, e.Summary)
	for i, c := range e.Candidates {
		mark := " "
		if i == e.Chosen {
			mark = "*"
		}
		if !c.Valid {
			fmt.Fprintf(&b, " %s %-48s %s\n", mark, c.Name, c.Verdict)
			continue
		}
		fmt.Fprintf(&b, " %s %-48s %8.1f s %9.0f MiB %7.0f ms %3d rounds  %s\n", mark, c.Name,
			c.Mean.Seconds, c.Mean.WireMiB, c.Mean.DowntimeMs, c.Mean.Rounds, c.Verdict)
	}
	return b.String()
}

// URIs returns the migrate URIs for a source and target by their labels: rdma
// is set when both advertise RDMA, tcp when the target has a migrate address.
func URIs(src, dst map[string]string, rdmaPort int) (rdma, tcp string) {
	if a := dst[LabelMigrateAddr]; a != "" {
		tcp = "tcp://" + hostPort(a, 0)
	}
	if src[LabelRDMA] == "" || dst[LabelRDMA] == "" {
		return "", tcp
	}
	a := dst[LabelRDMA]
	if b, err := strconv.ParseBool(a); err == nil {
		if !b {
			return "", tcp
		}
		a = dst[LabelMigrateAddr]
	}
	if s, err := strconv.ParseBool(src[LabelRDMA]); err == nil && !s {
		return "", tcp
	}
	if a == "" {
		return "", tcp
	}
	return "rdma://" + hostPort(a, rdmaPort), tcp
}

// hostPort keeps a port the address has, else adds port if positive, and
// brackets a bare IPv6 address.
func hostPort(a string, port int) string {
	if _, _, err := net.SplitHostPort(a); err == nil {
		return a
	}
	h := strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
	if port > 0 {
		return net.JoinHostPort(h, strconv.Itoa(port))
	}
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

var modeRank = map[model.TransferMode]int{model.PreCopy: 0, model.AutoConverge: 1, model.PostCopy: 2}

// gentler orders candidates by how little they cost the guest and the hosts:
// throttling and post-copy hurt the guest, streams and compression take CPU
// on a source that is filling up.
func gentler(a, b *Candidate) int {
	ka := [3]int{modeRank[a.Options.Mode], a.Options.ParallelStreams, b2i(a.Options.Compression != "")}
	kb := [3]int{modeRank[b.Options.Mode], b.Options.ParallelStreams, b2i(b.Options.Compression != "")}
	for i := range ka {
		if ka[i] != kb[i] {
			return ka[i] - kb[i]
		}
	}
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Choose predicts every candidate option set and picks the fastest that
// converges within the downtime limit at the upper dirty rate, preferring gentler
// options within TieMargin of it. If none does, it picks the fastest that does at
// the mean rate, and failing that the one with the shortest forced pause.
func (c Chooser) Choose(in Input) (model.StateTransferOptions, Explanation) {
	m := c.Model.withDefaults()
	tie := c.TieMargin
	if !(tie > 0) {
		tie = 0.05
	}
	streams := c.Streams
	if len(streams) == 0 {
		streams = []int{1, 2, 4, 8}
	}
	link := in.Link.MiBps
	if !(link > 0) || math.IsInf(link, 0) {
		link = DefaultLinkMiBps
	}
	limit := in.Policy.MaxDowntimeMs
	if !(limit > 0) {
		limit = DefaultMaxDowntimeMs
	}
	var capMiBps float64
	if s := in.Policy.MaxBandwidthShare; s > 0 && s < 1 {
		capMiBps = s * link
	}
	if c := in.Policy.MaxBandwidthMiBps; c > 0 && !math.IsInf(c, 0) && (capMiBps == 0 || c < capMiBps) {
		capMiBps = c
	}
	mean := clamp(in.DirtyMiBps, 0, maxRate)
	upper := math.Max(clamp(in.DirtyUpperMiBps, 0, maxRate), mean)
	rdmaURI, tcpURI := URIs(in.SourceLabels, in.TargetLabels, c.RDMAPort)

	ex := Explanation{VM: in.VM, MemMiB: in.MemMiB, ZeroMiB: in.ZeroMiB, WorkingSetMiB: in.WorkingSetMiB,
		DirtyMiBps: mean, DirtyUpperMiBps: upper, DirtyMaxMiBps: in.DirtyMaxMiBps,
		LinkMiBps: link, CapMiBps: capMiBps, MaxDowntimeMs: limit, Chosen: -1}
	type transport struct {
		name, uri string
		rdma      bool
		streams   []int
		compress  []bool
	}
	var trs []transport
	if rdmaURI != "" {
		// QEMU refuses multifd and compression over RDMA; listing them adds nothing.
		trs = append(trs, transport{"rdma", rdmaURI, true, []int{1}, []bool{false}})
	}
	trs = append(trs, transport{"tcp", tcpURI, false, streams, []bool{false, true}})
	modes := []model.TransferMode{model.PreCopy, model.AutoConverge, model.PostCopy}
	for _, tr := range trs {
		for _, mode := range modes {
			for _, n := range tr.streams {
				for _, comp := range tr.compress {
					ex.Candidates = append(ex.Candidates,
						c.candidate(m, in, tr.name, tr.uri, tr.rdma, mode, n, comp, link, capMiBps, limit, mean, upper))
				}
			}
		}
	}

	pick := func(ok func(*Candidate) bool, better func(a, b *Candidate) bool) int {
		best := -1
		for i := range ex.Candidates {
			cd := &ex.Candidates[i]
			if ok(cd) && (best < 0 || better(cd, &ex.Candidates[best])) {
				best = i
			}
		}
		return best
	}
	faster := func(a, b *Candidate) bool { return a.Mean.Seconds < b.Mean.Seconds }
	fast := pick(func(c *Candidate) bool { return c.Feasible }, faster)
	switch {
	case fast >= 0:
		bestT := ex.Candidates[fast].Mean.Seconds
		near := func(c *Candidate) bool { return c.Feasible && c.Mean.Seconds <= bestT*(1+tie) }
		ex.Chosen = pick(near, func(a, b *Candidate) bool {
			if g := gentler(a, b); g != 0 {
				return g < 0
			}
			return faster(a, b)
		})
		ch := &ex.Candidates[ex.Chosen]
		if ex.Chosen == fast || ch.Mean.Seconds <= bestT {
			ch.Verdict = "chosen: fastest that converges within the limit at the upper dirty rate"
		} else {
			ch.Verdict = fmt.Sprintf("chosen: within %.0f%% of the fastest (%.1f s) and gentler", tie*100, bestT)
		}
		ex.Summary = fmt.Sprintf("chose %s: %.1f s, %.0f ms downtime", ch.Name, ch.Mean.Seconds, ch.Mean.DowntimeMs)
		for i := range ex.Candidates {
			cd := &ex.Candidates[i]
			if i == ex.Chosen || !cd.Feasible {
				continue
			}
			if near(cd) {
				cd.Verdict = "lost: as fast, but " + whyLess(cd, ch)
			} else {
				cd.Verdict = fmt.Sprintf("lost: slower, %.1f s vs %.1f s", cd.Mean.Seconds, ch.Mean.Seconds)
			}
		}
	default:
		okMean := func(c *Candidate) bool {
			return c.Valid && c.Mean.Converged && c.Mean.DowntimeMs <= limit+m.SwitchOverMs+1e-9
		}
		ex.Chosen = pick(okMean, faster)
		if ex.Chosen >= 0 {
			ex.Summary = "no candidate converges within the limit at the upper dirty rate; chose the fastest that does at the mean"
		} else {
			ex.Chosen = pick(func(c *Candidate) bool { return c.Valid }, func(a, b *Candidate) bool {
				if a.Mean.DowntimeMs != b.Mean.DowntimeMs {
					return a.Mean.DowntimeMs < b.Mean.DowntimeMs
				}
				return faster(a, b)
			})
			ex.Summary = "no candidate converges within the limit; chose the shortest forced pause"
		}
		ch := &ex.Candidates[ex.Chosen]
		ch.Verdict = "chosen: fallback, " + ch.Verdict
		ex.Summary += fmt.Sprintf(": %s, %.1f s, %.0f ms downtime", ch.Name, ch.Mean.Seconds, ch.Mean.DowntimeMs)
	}
	return ex.Candidates[ex.Chosen].Options, ex
}

func (c Chooser) candidate(m Model, in Input, trName, uri string, rdma bool, mode model.TransferMode,
	streams int, compress bool, link, capMiBps, limit, mean, upper float64) Candidate {
	o := Options{Mode: mode, Streams: streams, CapMiBps: capMiBps, MaxDowntimeMs: limit, RDMA: rdma}
	if compress {
		// The method that goes with the stream count: zstd needs multifd, and
		// QEMU refuses xbzrle with it.
		o.Compression, o.Ratio = CompressZstd, in.Compressibility
		if streams <= 1 {
			o.Compression, o.Ratio = CompressXBZRLE, in.XBZRLERatio
		}
	}
	cd := Candidate{Transport: trName, Options: model.StateTransferOptions{
		Mode: mode, ParallelStreams: streams, Compression: o.Compression,
		BandwidthMiBps: capMiBps, MaxDowntimeMs: limit, MigrateURI: uri,
	}}
	s := "streams"
	if streams == 1 {
		s = "stream"
	}
	cd.Name = fmt.Sprintf("%s %s, %d %s", trName, mode, streams, s)
	if o.Compression != "" {
		cd.Name += ", " + o.Compression
	}
	if err := m.Validate(o); err != nil {
		cd.Verdict = "invalid: " + err.Error()
		return cd
	}
	if mode == model.PostCopy && !in.Policy.PostCopy {
		cd.Verdict = "invalid: the group's policy forbids post-copy"
		return cd
	}
	cd.Valid = true
	j := Job{MemMiB: in.MemMiB, ZeroMiB: in.ZeroMiB, WorkingSetMiB: in.WorkingSetMiB, DirtyMiBps: mean,
		DirtyMaxMiBps: in.DirtyMaxMiBps, LinkMiBps: link, SetupSeconds: in.Link.SetupSeconds, Options: o}
	cd.Mean = m.Predict(j)
	j.DirtyMiBps = upper
	cd.Upper = m.Predict(j)
	cd.Options.PredictedSeconds = cd.Mean.Seconds
	cd.Options.PredictedDowntime = cd.Mean.DowntimeMs
	cd.Options.PredictedDataMiB = cd.Mean.WireMiB
	switch {
	case !cd.Upper.Converged:
		cd.Verdict = fmt.Sprintf("infeasible: does not converge at %.0f MiB/s dirty (%s; gave up after %.0f s)",
			upper, cd.Upper.Why, cd.Upper.Seconds)
	case cd.Upper.DowntimeMs > limit+m.SwitchOverMs+1e-9:
		cd.Verdict = fmt.Sprintf("infeasible: downtime %.0f ms over the %.0f ms limit", cd.Upper.DowntimeMs, limit)
	default:
		cd.Feasible = true
	}
	return cd
}

// whyLess says why a candidate as fast as the chosen one lost to it.
func whyLess(c, chosen *Candidate) string {
	switch {
	case modeRank[c.Options.Mode] > modeRank[chosen.Options.Mode]:
		if c.Options.Mode == model.PostCopy {
			return "post-copy risks the VM and faults pages in"
		}
		if c.Upper.FinalThrottle == 0 {
			return "auto-converge could throttle the guest"
		}
		return "auto-converge throttles the guest"
	case c.Options.ParallelStreams > chosen.Options.ParallelStreams:
		return "more streams take more CPU"
	case c.Options.Compression != "" && chosen.Options.Compression == "":
		return "compression takes CPU"
	default:
		return fmt.Sprintf("slightly slower, %.1f s vs %.1f s", c.Mean.Seconds, chosen.Mean.Seconds)
	}
}
