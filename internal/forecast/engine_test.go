package forecast

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

func TestEngineForecastShape(t *testing.T) {
	e, err := NewEngine(Config{Step: 60, Horizon: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Forecast("ghost", 4, 0.9); ok {
		t.Error("forecast for an unknown VM")
	}
	if p := e.ProbExceed("ghost", model.CPU, 0.8, 4); !math.IsNaN(p) {
		t.Errorf("ProbExceed for an unknown VM = %v", p)
	}
	for i := range 50 {
		e.Observe("vm1", model.CPU, 0.5+0.01*float64(i%3))
		e.Observe("vm1", model.Mem, 0.25)
	}
	f, ok := e.Forecast("vm1", 10, 0.9)
	if !ok {
		t.Fatal("no forecast for vm1")
	}
	if f.Horizon() != 4 || len(f.Upper) != 4 || f.Step != 60 || f.Confidence != 0.9 || f.VMInstanceID != "vm1" {
		t.Fatalf("forecast shape %+v", f)
	}
	if f.PredictedNetworkIO != nil || f.PredictedDiskIO != nil {
		t.Error("resources never observed have predictions")
	}
	for i := range 4 {
		if c := f.PredictedCPU[i]; c < 0.49 || c > 0.53 {
			t.Errorf("cpu step %d = %v", i+1, c)
		}
		if f.Upper[i].CPU < f.PredictedCPU[i] || f.Upper[i].Mem < 0.2499 {
			t.Errorf("step %d upper %+v below the forecast", i+1, f.Upper[i])
		}
		if f.Point(i).Mem < 0.2499 || f.Point(i).Mem > 0.2501 {
			t.Errorf("mem step %d = %v", i+1, f.Point(i).Mem)
		}
	}
	if p := e.ProbExceed("vm1", model.CPU, 0.8, 4); p > 0.05 {
		t.Errorf("P(cpu > 0.8) = %v for a VM steady at 0.5", p)
	}
	if p := e.ProbExceed("vm1", model.CPU, 0.2, 4); p < 0.95 {
		t.Errorf("P(cpu > 0.2) = %v for a VM steady at 0.5", p)
	}
	old := e.VM("vm1")
	e.Remove("vm1")
	if e.Len() != 0 {
		t.Error("Remove kept the VM")
	}
	// A stale handle must not write into a ring that a new VM now owns.
	fresh := e.VM("vm2")
	fresh.Observe(model.CPU, 0.7)
	old.Observe(model.CPU, 0.1)
	if f := fresh.Forecast(1, 0.9); math.Abs(f.PredictedCPU[0]-0.7) > 1e-6 {
		t.Errorf("new VM forecasts %v after one sample of 0.7", f.PredictedCPU)
	}
	if f := old.Forecast(1, 0.9); f.PredictedCPU != nil {
		t.Errorf("removed VM forecasts %v", f.PredictedCPU)
	}
}

// Run with -race: writers on their own VMs, readers on all of them.
func TestEngineConcurrentUse(t *testing.T) {
	e, _ := NewEngine(Config{})
	const vms, steps = 16, 300
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range steps {
				for v := w; v < vms; v += 4 {
					vm := e.VM(fmt.Sprint("vm", v))
					vm.ObserveAll(model.Resources{CPU: rng.Float64(), Mem: 0.5, Net: 100 * rng.Float64(), Disk: float64(i)})
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range steps * 4 {
				id := fmt.Sprint("vm", i%vms)
				if f, ok := e.Forecast(id, 6, 0.9); ok && len(f.Upper) != 6 {
					t.Errorf("forecast of %s has %d steps", id, len(f.Upper))
				}
				e.ProbExceed(id, model.CPU, 0.8, 6)
			}
		}()
	}
	wg.Wait()
	if e.Len() != vms {
		t.Fatalf("%d VMs, want %d", e.Len(), vms)
	}
	f, _ := e.Forecast("vm3", 6, 0.9)
	if len(f.PredictedDiskIO) != 6 || f.PredictedDiskIO[0] < steps-10 {
		t.Errorf("disk forecast %v for a counter at %d", f.PredictedDiskIO, steps)
	}
}

func TestFleetMemoryPerSample(t *testing.T) {
	// The week-long history a default Series keeps, and what it costs in total.
	// 16 bits (the default): 2 bytes a sample, plus the exact newest 32
	// and the peak blocks; 32 bits: 4 plus the blocks.
	for _, c := range []struct {
		bits      int
		hist, all float64
	}{{0, 2.15, 14}, {32, 4.1, 16}} {
		s, _ := NewSeries(Config{HistoryBits: c.bits})
		for i := range 2100 {
			s.Observe(float32(i % 17))
		}
		per := float64(s.Bytes()) / float64(s.hist.Len())
		if hb := float64(s.hist.Bytes()) / float64(s.hist.Cap()); hb > c.hist {
			t.Errorf("%d bits: history %.2f bytes a sample", c.bits, hb)
		}
		if per > c.all {
			t.Errorf("%d bits: series state %.1f bytes a sample held", c.bits, per)
		}
	}
}

// ObserveBatch reads ahead without locks; run with -race alongside readers.
// Reading ahead changes no result: the batch equals the VMs observed one by
// one with the same prior learnt and published after them.
func TestObserveBatchMatchesObserveAll(t *testing.T) {
	a, _ := NewEngine(Config{})
	b, _ := NewEngine(Config{})
	const n = 50
	va, vb := make([]*VM, n), make([]*VM, n)
	for i := range n {
		va[i], vb[i] = a.VM(fmt.Sprint(i)), b.VM(fmt.Sprint(i))
	}
	rng := rand.New(rand.NewPCG(30, 31))
	d := make([]model.Resources, n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 2000 {
			a.Forecast(fmt.Sprint(i%n), 6, 0.9)
		}
	}()
	for range 200 {
		for i := range d {
			d[i] = model.Resources{CPU: rng.Float64(), Mem: rng.Float64(), Net: rng.Float64(), Disk: rng.Float64()}
		}
		a.ObserveBatch(va, d)
		var acc [4]poolAcc
		for i, v := range vb {
			v.observeAll(d[i], &acc)
		}
		for r := range acc {
			b.sh.pool.merge(r, &acc[r], n, n)
		}
	}
	wg.Wait()
	for i := range n {
		fa, fb := va[i].Forecast(6, 0.9), vb[i].Forecast(6, 0.9)
		for s := range 6 {
			if fa.Upper[s] != fb.Upper[s] || fa.PredictedNetworkIO[s] != fb.PredictedNetworkIO[s] {
				t.Fatalf("vm %d step %d: batch %+v, one by one %+v", i, s+1, fa.Upper[s], fb.Upper[s])
			}
		}
	}
}

func TestObserveBatchWithConcurrentWriters(t *testing.T) {
	e, _ := NewEngine(Config{})
	vms := make([]*VM, 40)
	for i := range vms {
		vms[i] = e.VM(fmt.Sprint(i))
	}
	d := make([]model.Resources, len(vms))
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if w == 0 {
					e.ObserveBatch(vms, d)
				} else {
					vms[(i*7+w)%len(vms)].Observe(model.Resource(i%4), float64(i))
				}
			}
		}()
	}
	wg.Wait()
}

// AppendForecast gives what Forecast gives, and with the caller's slices
// already sized it allocates nothing.
func TestAppendForecastReuses(t *testing.T) {
	e, _ := NewEngine(Config{Step: 300, Horizon: 6})
	vm := e.VM("a")
	for i := range 400 {
		vm.Observe(model.CPU, 0.3+0.1*float64(i%7))
		vm.Observe(model.Disk, float64(i%11))
	}
	var dst model.ResourceForecast
	for _, steps := range []int{6, 3, 0, 6} {
		vm.AppendForecast(&dst, steps, 0.9)
		if want := vm.Forecast(steps, 0.9); !reflect.DeepEqual(dst, want) {
			t.Fatalf("steps %d: AppendForecast\n%+v\nForecast\n%+v", steps, dst, want)
		}
	}
	if dst.PredictedMemory != nil || dst.PredictedDiskIO == nil {
		t.Fatalf("memory %v, disk %v: want only observed resources", dst.PredictedMemory, dst.PredictedDiskIO)
	}
	if n := testing.AllocsPerRun(100, func() { vm.AppendForecast(&dst, 6, 0.9) }); n != 0 {
		t.Errorf("AppendForecast into sized slices: %v allocations, want 0", n)
	}
}
