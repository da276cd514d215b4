package forecast

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/headroom/headroom/internal/model"
)

// benchSignal is a bursty signal like the PlanetLab traces: a drifting level
// with heavy-tailed noise and a daily cycle.
func benchSignal(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	lvl := 0.1 + 0.2*rng.Float64()
	for i := range x {
		lvl += 0.002 * rng.NormFloat64()
		v := lvl*(1+0.3*sinDay(i)) + 0.05*rng.ExpFloat64()*rng.NormFloat64()
		x[i] = float32(min(max(v, 0), 1))
	}
	return x
}

// BenchmarkObserve is the cost of one update of one VM-resource in steady state
// (a week of history, every model of the default blend live): the model
// update, the forecast cached for readers and the calibration.
func BenchmarkObserve(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	s, _ := NewSeries(Config{})
	x := benchSignal(rng, 2100+4096)
	for _, v := range x[:2100] {
		s.Observe(v)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Observe(x[2100+i%4096])
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkFleet is one step forward for 100,000 VMs x 4 resources through the
// Engine's public API: every series takes its next sample (lock, model update,
// blend, calibration) and caches its forecast with bounds, which is what
// Forecast and ProbExceed then read. One op is the whole fleet, split into
// contiguous chunks over GOMAXPROCS goroutines as a collector would. Horizon 6
// is the 30-minute setting of the backtest; horizon 1 forecasts one step ahead.
// To keep setup short, 256 VMs are warmed up on a week of history and their
// state is copied to the rest, so every series is in steady state with a full
// ring and every model of the blend live.
//
// heap-MB is the live heap the fleet adds (after GC, setup garbage freed):
// the memory a controller keeps for 100,000 VMs x 4 resources. bits=32 is the
// float32 history kept before 16-bit history became the default.
func BenchmarkFleet(b *testing.B) {
	for _, h := range []int{6, 1} {
		b.Run(fmt.Sprintf("horizon=%d", h), func(b *testing.B) { benchFleet(b, h, 0) })
	}
	b.Run("horizon=1/bits=32", func(b *testing.B) { benchFleet(b, 1, 32) })
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func benchFleet(b *testing.B, horizon, bits int) {
	const vms = 100_000
	heap0 := heapInUse()
	e, _ := NewEngine(Config{Horizon: horizon, Capacity: benchCapX, HistoryBits: bits})
	rng := rand.New(rand.NewPCG(3, 4))
	const warm = 256
	hist := 2100
	proto := make([]*VM, warm)
	for i := range proto {
		proto[i] = e.VM(vmName(i))
		for _, r := range model.AllResources {
			for _, v := range benchSignal(rng, hist) {
				proto[i].Observe(r, float64(v))
			}
		}
	}
	handles := make([]*VM, vms)
	copy(handles, proto)
	for i := warm; i < vms; i++ {
		v := e.VM(vmName(i))
		for r, s := range proto[i%warm].res {
			v.res[r] = s.clone(e.rings)
		}
		handles[i] = v
	}
	samples := make([]model.Resources, vms)
	for i := range samples {
		samples[i] = model.Resources{CPU: rng.Float64(), Mem: rng.Float64(), Net: 1000 * rng.Float64(), Disk: 1000 * rng.Float64()}
	}
	var hb, total, n int64
	for _, v := range handles {
		for _, s := range v.res {
			hb += int64(s.hist.Bytes())
			total += int64(s.Bytes())
			n += int64(s.hist.Len())
		}
	}
	held := float64(n)
	workers := runtime.GOMAXPROCS(0)
	samplesBytes := float64(vms * int(unsafe.Sizeof(model.Resources{})))
	heap := float64(heapInUse()-heap0) - samplesBytes // also GCs: not the setup's garbage on the clock
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Contiguous chunks: neighbouring VMs share cache lines.
				lo, hi := w*vms/workers, (w+1)*vms/workers
				e.ObserveBatch(handles[lo:hi], samples[lo:hi])
			}()
		}
		wg.Wait()
	}
	// CPU time per op alongside wall time: on a shared machine the wall time
	// also counts other processes' turns.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
	b.ReportMetric(float64(hb)/held, "history-B/sample")
	b.ReportMetric(float64(total)/held, "state-B/sample")
	b.ReportMetric(heap/1e6, "heap-MB")
	b.ReportMetric(heap/(4*vms), "heap-B/series")
	// Free the fleet before the next sub-benchmark builds its own.
	handles, proto = nil, nil
	runtime.GC()
}

func vmName(i int) string { return "vm-" + string(rune('a'+i%26)) + itoa(i) }

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

var benchCapX = 0

// BenchmarkPeak is Series.Peak over a day (288 samples) of a week-long 16-bit
// history, from the block maxima and by the plain scan it replaces; the
// controller reads it for 4 resources of every VM every cycle.
func BenchmarkPeak(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	s, _ := NewSeries(Config{})
	for _, v := range benchSignal(rng, 2100) {
		s.Observe(v)
	}
	day := s.sh.params.day()
	var sink float32
	b.Run("blocks", func(b *testing.B) {
		for b.Loop() {
			sink += s.Peak(day)
		}
	})
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			sink += s.hist.scanPeak(day)
		}
	})
	if sink == 1e-38 {
		b.Log(sink)
	}
}
