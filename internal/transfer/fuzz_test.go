package transfer

import (
	"math"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// FuzzPredict feeds the model arbitrary sizes, rates and limits, valid or not,
// and checks every output is finite and non-negative and at least all RAM is sent.
func FuzzPredict(f *testing.F) {
	f.Add(8192.0, 100.0, 1000.0, 300.0, 0.0, uint8(0), uint8(1), uint8(0), 0.0)
	f.Add(4096.0, 5000.0, 112.0, 300.0, 0.0, uint8(1), uint8(2), uint8(1), 3.0)
	f.Add(4096.0, 5000.0, 112.0, 300.0, 100.0, uint8(2), uint8(1), uint8(0), 0.0)
	f.Add(1.0, 0.0, 1e9, 0.001, 0.0, uint8(0), uint8(8), uint8(2), 1e9)
	f.Add(1e300, math.Inf(1), 0.0, -1.0, math.NaN(), uint8(3), uint8(255), uint8(3), -5.0)
	f.Add(0.0, math.NaN(), -1.0, math.Inf(1), 0.0, uint8(1), uint8(0), uint8(1), 0.0)
	modes := []model.TransferMode{model.PreCopy, model.AutoConverge, model.PostCopy, ""}
	comps := []string{CompressNone, CompressZstd, CompressXBZRLE, CompressZlib}
	f.Fuzz(func(t *testing.T, mem, dirty, link, downtime, ws float64, mode, streams, comp uint8, ratio float64) {
		j := Job{MemMiB: mem, WorkingSetMiB: ws, DirtyMiBps: dirty, LinkMiBps: link, Options: Options{
			Mode: modes[int(mode)%len(modes)], Streams: int(streams % 16), Compression: comps[int(comp)%len(comps)],
			Ratio: ratio, MaxDowntimeMs: downtime, RDMA: streams&0x80 != 0, CapMiBps: ratio * 10,
		}}
		p := DefaultModel().Predict(j)
		for name, v := range map[string]float64{
			"MemMiB": p.MemMiB, "Seconds": p.Seconds, "DataMiB": p.DataMiB, "WireMiB": p.WireMiB,
			"DowntimeMs": p.DowntimeMs, "RateMiBps": p.RateMiBps, "WireMiBps": p.WireMiBps,
			"FinalThrottle": p.FinalThrottle, "ThrottledSeconds": p.ThrottledSeconds,
			"FaultedMiB": p.FaultedMiB, "CPUSeconds": p.CPUSeconds,
		} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("%s = %v for %+v", name, v, j)
			}
		}
		if p.DataMiB < p.MemMiB {
			t.Fatalf("sent %v MiB of %v for %+v", p.DataMiB, p.MemMiB, j)
		}
		if mem >= 0 && mem <= maxMiB && p.MemMiB != mem {
			t.Fatalf("used %v MiB for a %v MiB guest", p.MemMiB, mem)
		}
		if p.Rounds < 0 || p.FinalThrottle > 0.99 || p.RateMiBps <= 0 {
			t.Fatalf("rounds %d throttle %v rate %v for %+v", p.Rounds, p.FinalThrottle, p.RateMiBps, j)
		}
		if p.Seconds < DefaultModel().SetupSeconds {
			t.Fatalf("%v s, less than setup", p.Seconds)
		}
		// Zero pages and a paced dirtier: still finite, and never less than the
		// non-zero RAM sent.
		j.ZeroMiB, j.DirtyMaxMiBps = ws, link
		q := DefaultModel().Predict(j)
		for name, v := range map[string]float64{"Seconds": q.Seconds, "DataMiB": q.DataMiB, "DowntimeMs": q.DowntimeMs} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("with zero pages and DirtyMax: %s = %v for %+v", name, v, j)
			}
		}
		if z := clamp(ws, 0, q.MemMiB); q.DataMiB < q.MemMiB-z-1e-9*q.MemMiB {
			t.Fatalf("sent %v MiB of %v non-zero for %+v", q.DataMiB, q.MemMiB-z, j)
		}
	})
}
