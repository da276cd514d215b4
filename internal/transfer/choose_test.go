package transfer

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

const gbe = 112 // MiB/s a 1 GbE link carries, less than one stream can

func chooseFor(t *testing.T, in Input) (model.StateTransferOptions, Explanation) {
	t.Helper()
	o, ex := NewChooser(DefaultModel()).Choose(in)
	if ex.Chosen < 0 || ex.Chosen >= len(ex.Candidates) {
		t.Fatalf("chosen index %d of %d", ex.Chosen, len(ex.Candidates))
	}
	c := ex.Candidates[ex.Chosen]
	if c.Options != o || !strings.HasPrefix(c.Verdict, "chosen") {
		t.Fatalf("returned %+v, explanation's chosen %+v (%s)", o, c.Options, c.Verdict)
	}
	if o.PredictedSeconds != c.Mean.Seconds || o.PredictedDowntime != c.Mean.DowntimeMs ||
		o.PredictedDataMiB != c.Mean.WireMiB || o.PredictedSeconds <= 0 {
		t.Fatalf("predicted figures %+v do not match %+v", o, c.Mean)
	}
	return o, ex
}

func find(ex Explanation, mode model.TransferMode, streams int, comp, transport string) *Candidate {
	for i := range ex.Candidates {
		c := &ex.Candidates[i]
		if c.Options.Mode == mode && c.Options.ParallelStreams == streams && c.Options.Compression == comp &&
			c.Transport == transport {
			return c
		}
	}
	return nil
}

func TestChooseLowDirtyRatePicksPlainPreCopyOneStream(t *testing.T) {
	o, ex := chooseFor(t, Input{MemMiB: 4096, DirtyMiBps: 5, DirtyUpperMiBps: 8, Link: Link{MiBps: gbe}})
	if o.Mode != model.PreCopy || o.ParallelStreams != 1 || o.Compression != "" {
		t.Fatalf("chose %+v\n%s", o, ex)
	}
	if o.MaxDowntimeMs != DefaultMaxDowntimeMs || o.BandwidthMiBps != 0 {
		t.Errorf("downtime %v, bandwidth %v", o.MaxDowntimeMs, o.BandwidthMiBps)
	}
	// Auto-converge never throttles here, so it is as fast and loses on gentleness.
	ac := find(ex, model.AutoConverge, 1, "", "tcp")
	if ac == nil || ac.Mean.Seconds != o.PredictedSeconds || !strings.Contains(ac.Verdict, "throttle") {
		t.Errorf("auto-converge candidate: %+v", ac)
	}
	if c := find(ex, model.PreCopy, 4, "", "tcp"); c == nil || !strings.Contains(c.Verdict, "streams") {
		t.Errorf("4-stream candidate: %+v", c)
	}
}

func TestChooseUsesStreamsWhenOneCannotFillTheLink(t *testing.T) {
	o, ex := chooseFor(t, Input{MemMiB: 8192, DirtyMiBps: 5, DirtyUpperMiBps: 8, Link: Link{MiBps: 1100}})
	if o.Mode != model.PreCopy || o.ParallelStreams != 4 {
		t.Fatalf("chose %+v\n%s", o, ex)
	}
	// 8 streams are no faster than the 4 that fill the link.
	if c := find(ex, model.PreCopy, 8, "", "tcp"); c == nil || c.Mean.Seconds != o.PredictedSeconds {
		t.Errorf("8 streams: %+v", c)
	}
}

func TestChooseDirtyNearRateAvoidsSingleStreamPreCopy(t *testing.T) {
	o, ex := chooseFor(t, Input{MemMiB: 8192, DirtyMiBps: 450, DirtyUpperMiBps: 500, Link: Link{MiBps: 1100}})
	if o.Mode != model.AutoConverge && o.ParallelStreams <= 1 {
		t.Fatalf("chose %+v\n%s", o, ex)
	}
	if o.Mode == model.PostCopy {
		t.Fatalf("post-copy chosen though the policy forbids it: %+v", o)
	}
	if c := find(ex, model.PreCopy, 1, "", "tcp"); c == nil || c.Feasible || !strings.HasPrefix(c.Verdict, "infeasible") {
		t.Errorf("single-stream pre-copy should not converge at the upper rate: %+v", c)
	}
}

func TestChooseDirtyAboveRate(t *testing.T) {
	in := Input{MemMiB: 4096, DirtyMiBps: 150, DirtyUpperMiBps: 180, Link: Link{MiBps: gbe},
		Policy: Policy{PostCopy: true}}
	o, ex := chooseFor(t, in)
	if o.Mode != model.PostCopy {
		t.Fatalf("with post-copy allowed chose %+v\n%s", o, ex)
	}
	ac := find(ex, model.AutoConverge, 1, "", "tcp")
	if ac == nil || !ac.Feasible || ac.Mean.Seconds <= o.PredictedSeconds {
		t.Errorf("auto-converge should converge but slower: %+v", ac)
	}
	in.Policy.PostCopy = false
	o, ex = chooseFor(t, in)
	if o.Mode != model.AutoConverge {
		t.Fatalf("without post-copy chose %+v\n%s", o, ex)
	}
	if c := find(ex, model.PostCopy, 1, "", "tcp"); c == nil || c.Valid || !strings.Contains(c.Verdict, "policy") {
		t.Errorf("forbidden post-copy candidate: %+v", c)
	}
}

func TestExplanationListsAllCandidates(t *testing.T) {
	in := Input{VM: "web-1", MemMiB: 4096, DirtyMiBps: 50, Link: Link{MiBps: 1100}, Policy: Policy{PostCopy: true},
		SourceLabels: map[string]string{LabelRDMA: "10.9.0.1"},
		TargetLabels: map[string]string{LabelRDMA: "10.9.0.2", LabelMigrateAddr: "10.0.0.2"}}
	_, ex := chooseFor(t, in)
	// TCP: 3 modes x 4 stream counts x compression off/on; RDMA: 3 modes.
	if len(ex.Candidates) != 3*4*2+3 {
		t.Fatalf("%d candidates", len(ex.Candidates))
	}
	names := map[string]bool{}
	chosen := 0
	text := ex.String()
	for _, c := range ex.Candidates {
		if c.Verdict == "" || names[c.Name] {
			t.Errorf("candidate %q: verdict %q, duplicate %v", c.Name, c.Verdict, names[c.Name])
		}
		names[c.Name] = true
		if strings.HasPrefix(c.Verdict, "chosen") {
			chosen++
		}
		if !strings.Contains(text, c.Name) {
			t.Errorf("String() misses %q", c.Name)
		}
		if c.Valid && c.Mean.Seconds <= 0 {
			t.Errorf("valid %q has no prediction", c.Name)
		}
	}
	if chosen != 1 {
		t.Errorf("%d chosen verdicts", chosen)
	}
	for _, s := range []string{"post-copy with xbzrle", "post-copy over RDMA", "post-copy with multifd"} {
		if !strings.Contains(text, s) {
			t.Errorf("explanation lacks %q:\n%s", s, text)
		}
	}
}

func TestChooseRDMAWhenBothHostsAdvertise(t *testing.T) {
	src := map[string]string{LabelRDMA: "10.9.0.1"}
	dst := map[string]string{LabelRDMA: "10.9.0.2", LabelMigrateAddr: "10.0.0.2"}
	c := NewChooser(DefaultModel())
	c.RDMAPort = 4444
	o, ex := c.Choose(Input{MemMiB: 8192, DirtyMiBps: 20, Link: Link{MiBps: 1100}, SourceLabels: src, TargetLabels: dst})
	// One RDMA stream fills the link that TCP needs four for.
	if o.MigrateURI != "rdma://10.9.0.2:4444" || o.ParallelStreams != 1 {
		t.Fatalf("chose %+v\n%s", o, ex)
	}
	delete(src, LabelRDMA)
	o, _ = c.Choose(Input{MemMiB: 8192, DirtyMiBps: 20, Link: Link{MiBps: 1100}, SourceLabels: src, TargetLabels: dst})
	if o.MigrateURI != "tcp://10.0.0.2" {
		t.Fatalf("without RDMA on the source: %q", o.MigrateURI)
	}
	o, _ = c.Choose(Input{MemMiB: 8192, DirtyMiBps: 20, Link: Link{MiBps: 1100}})
	if o.MigrateURI != "" {
		t.Fatalf("no labels: %q", o.MigrateURI)
	}
}

func TestURIs(t *testing.T) {
	for _, c := range []struct {
		src, dst  map[string]string
		port      int
		rdma, tcp string
	}{
		{nil, map[string]string{LabelMigrateAddr: "10.0.0.2"}, 0, "", "tcp://10.0.0.2"},
		{nil, map[string]string{LabelMigrateAddr: "fd00::2"}, 0, "", "tcp://[fd00::2]"},
		{nil, map[string]string{LabelMigrateAddr: "h2.example:49200"}, 0, "", "tcp://h2.example:49200"},
		{map[string]string{LabelRDMA: "true"}, map[string]string{LabelRDMA: "true", LabelMigrateAddr: "10.0.0.2"}, 0,
			"rdma://10.0.0.2", "tcp://10.0.0.2"},
		{map[string]string{LabelRDMA: "a"}, map[string]string{LabelRDMA: "fd00::9"}, 4444, "rdma://[fd00::9]:4444", ""},
		{map[string]string{LabelRDMA: "a"}, map[string]string{LabelRDMA: "10.9.0.2:5555"}, 4444, "rdma://10.9.0.2:5555", ""},
		{map[string]string{LabelRDMA: "false"}, map[string]string{LabelRDMA: "10.9.0.2"}, 0, "", ""},
		{map[string]string{LabelRDMA: "true"}, map[string]string{LabelRDMA: "true"}, 0, "", ""}, // no address
	} {
		r, tc := URIs(c.src, c.dst, c.port)
		if r != c.rdma || tc != c.tcp {
			t.Errorf("URIs(%v, %v, %d) = %q, %q; want %q, %q", c.src, c.dst, c.port, r, tc, c.rdma, c.tcp)
		}
	}
}

func TestChooseBandwidthShareCapsRate(t *testing.T) {
	o, ex := chooseFor(t, Input{MemMiB: 8192, DirtyMiBps: 20, Link: Link{MiBps: 1000},
		Policy: Policy{MaxBandwidthShare: 0.3, MaxDowntimeMs: 100}})
	if o.BandwidthMiBps != 300 || o.MaxDowntimeMs != 100 {
		t.Fatalf("bandwidth %v, downtime %v", o.BandwidthMiBps, o.MaxDowntimeMs)
	}
	// The cap binds before streams do, so one stream is as fast as any.
	if o.ParallelStreams != 1 || ex.Candidates[ex.Chosen].Mean.WireMiBps != 300 {
		t.Errorf("chose %+v at %v MiB/s", o, ex.Candidates[ex.Chosen].Mean.WireMiBps)
	}
}

func TestChooseFixedBandwidthCap(t *testing.T) {
	in := Input{MemMiB: 1024, DirtyMiBps: 40, WorkingSetMiB: 48, Link: Link{MiBps: 1000},
		Policy: Policy{MaxBandwidthMiBps: 20}}
	o, ex := chooseFor(t, in)
	// Dirtying past the 20 MiB/s cap: only throttling converges, and more streams
	// cannot beat the cap.
	if o.BandwidthMiBps != 20 || o.Mode != model.AutoConverge || o.ParallelStreams != 1 {
		t.Fatalf("chose %+v\n%s", o, ex)
	}
	if c := find(ex, model.PreCopy, 4, "", "tcp"); c == nil || c.Feasible {
		t.Errorf("4-stream pre-copy under the cap: %+v", c)
	}
	if !strings.Contains(ex.String(), "cap 20 MiB/s") || !strings.Contains(ex.String(), "over 48 MiB") {
		t.Errorf("explanation lacks the cap or working set:\n%s", ex)
	}
	// The lower of share and fixed cap binds.
	in.Policy.MaxBandwidthShare = 0.01
	if o, _ := chooseFor(t, in); o.BandwidthMiBps != 10 {
		t.Errorf("share 1%% of 1000 and 20 MiB/s: cap %v", o.BandwidthMiBps)
	}
}

func TestChooseCompressionWhenItPays(t *testing.T) {
	in := Input{MemMiB: 8192, DirtyMiBps: 20, Link: Link{MiBps: gbe}}
	o, _ := chooseFor(t, in)
	if o.Compression != "" {
		t.Fatalf("compressed with unknown compressibility: %+v", o)
	}
	in.Compressibility = 3
	o, ex := chooseFor(t, in)
	if o.Compression != CompressZstd || o.ParallelStreams < 2 {
		t.Fatalf("a 3x compressible guest on 1 GbE: %+v\n%s", o, ex)
	}
}

func TestChooseFallbackWhenNothingConverges(t *testing.T) {
	m := DefaultModel()
	m.MaxRounds = 3 // too few for auto-converge to act
	o, ex := NewChooser(m).Choose(Input{MemMiB: 65536, DirtyMiBps: 5000, Link: Link{MiBps: gbe}})
	if ex.Chosen < 0 || !strings.Contains(ex.Summary, "no candidate") || o.PredictedSeconds <= 0 {
		t.Fatalf("fallback: %+v\n%s", o, ex)
	}
}

func TestVMInput(t *testing.T) {
	in := VMInput(model.VM{ID: "a", Size: model.Resources{Mem: 2048}, DirtyRate: 104.8576})
	if in.VM != "a" || in.MemMiB != 2048 || in.DirtyMiBps < 99.999 || in.DirtyMiBps > 100.001 {
		t.Errorf("%+v", in)
	}
}

func BenchmarkChoose(b *testing.B) {
	c := NewChooser(DefaultModel())
	in := Input{MemMiB: 16384, DirtyMiBps: 300, DirtyUpperMiBps: 400, Link: Link{MiBps: 1100}, Policy: Policy{PostCopy: true}}
	for range b.N {
		c.Choose(in)
	}
}
