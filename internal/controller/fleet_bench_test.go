package controller

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// fleetSize is the benchmark's fleet: HEADROOM_FLEET_HOSTS hosts (default
// 10,000) with ten VMs each.
func fleetSize() int {
	if n, err := strconv.Atoi(os.Getenv("HEADROOM_FLEET_HOSTS")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// BenchmarkFleetCycle times one full controller cycle (list, read stats,
// forecast, decide, start the moves) in auto mode with the in-memory driver
// at 10,000 hosts and 100,000 VMs: 16-core hosts holding ten 2-vCPU VMs each
// (overcommitted 1.25x), each VM's load on a daily sine with its own phase
// and noise, so some hosts overload every cycle and the core has moves to
// find. It reports the median cycle's wall time, the CPU time per cycle (all
// threads: steadier than wall time on a shared machine), the heap allocated
// per cycle, the live heap after the last cycle, the heap the next GC waits
// for, and the process's peak RSS (VmHWM, which includes setup). Figures and
// what dominates: the README (Fleet-scale benchmarks).
//
//	go test -run '^$' -bench FleetCycle -benchtime 5x -timeout 30m ./internal/controller
func BenchmarkFleetCycle(b *testing.B) {
	nh := fleetSize()
	hosts := make([]hypervisor.Host, nh)
	cfgHosts := make([]HostConfig, nh)
	for i := range hosts {
		id := fmt.Sprintf("h%05d", i)
		hosts[i] = hypervisor.Host{ID: id, PEs: 16, PEMIPS: 2000, Capacity: model.Resources{CPU: 32000, Mem: 131072}}
		cfgHosts[i] = HostConfig{ID: id, URI: "memory://" + id}
	}
	d := memory.New(memory.Options{}, hosts...)
	defer d.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	type vmLoad struct {
		id           string
		base, amp, φ float64
	}
	var loads []vmLoad
	for i := range nh * 10 {
		id := fmt.Sprintf("vm%06d", i)
		vm := hypervisor.VM{ID: id, Host: hosts[i/10].ID, State: hypervisor.StateRunning, VCPUs: 2, MemMiB: 8192,
			Size: model.Resources{CPU: 4000, Mem: 8192}, Persistent: true}
		l := vmLoad{id: id, base: 0.2 + 0.4*rng.Float64(), amp: 0.3 * rng.Float64(), φ: 2 * math.Pi * rng.Float64()}
		loads = append(loads, l)
		if err := d.AddVM(vm, memory.Usage{CPUUtil: l.base, MemMiB: 4096}); err != nil {
			b.Fatal(err)
		}
	}
	log, err := store.Open(filepath.Join(b.TempDir(), "events.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cfg := Config{Interval: 5 * time.Minute, Mode: Auto, Hosts: cfgHosts, MaxConcurrent: 100, MaxPerHost: 1}
	c, err := New(cfg, d, log)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cycle := 0
	// load moves every VM along its daily curve and the clock an interval on.
	load := func() {
		cycle++
		t := float64(cycle) * cfg.Interval.Seconds() / 86400 * 2 * math.Pi
		for _, l := range loads {
			u := l.base + l.amp*math.Sin(t+l.φ) + 0.05*rng.NormFloat64()
			d.SetUsage(l.id, memory.Usage{CPUUtil: min(max(u, 0), 1), MemMiB: 4096})
		}
		d.Advance(cfg.Interval)
	}
	// A few cycles first so that every VM has a history and forecasts. They
	// run under a profiler label so that a CPU profile can leave them out
	// (go tool pprof -tagignore phase=warm-up): the first cycle makes every
	// VM's series, which later cycles do not.
	pprof.Do(ctx, pprof.Labels("phase", "warm-up"), func(ctx context.Context) {
		for range 3 {
			load()
			if _, err := c.Step(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	var moves, started int
	var cpu time.Duration // the process's CPU time in the cycles, all threads
	var walls []float64   // each cycle's wall seconds
	for b.Loop() {
		b.StopTimer()
		load()
		u0, t0 := cpuTime(), time.Now()
		b.StartTimer()
		cy, err := c.Step(ctx)
		b.StopTimer()
		walls = append(walls, time.Since(t0).Seconds())
		cpu += cpuTime() - u0
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
		moves += len(cy.Plan.Moves)
		started += len(cy.Started)
		if len(cy.Snapshot.VMs) != nh*10 {
			b.Fatalf("snapshot has %d VMs", len(cy.Snapshot.VMs))
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	n := float64(b.N)
	// CPU seconds are less at the mercy of other work on a shared machine than
	// wall time; they include the garbage collector's work on other cores.
	b.ReportMetric(cpu.Seconds()/n, "cpu-s/cycle")
	slices.Sort(walls)
	b.ReportMetric(walls[len(walls)/2], "s-median/cycle")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/n/(1<<20), "MiB-alloc/cycle")
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.HeapAlloc)/(1<<20), "MiB-live-heap")
	// The heap the collector lets grow before it runs again (GOGC, and
	// GOMEMLIMIT if set): a long-running controller's heap reaches it, where
	// a few cycles' peak RSS may not.
	b.ReportMetric(float64(m1.NextGC)/(1<<20), "MiB-next-GC")
	b.ReportMetric(peakRSSMiB(), "MiB-peak-RSS")
	b.ReportMetric(float64(moves)/n, "moves/cycle")
	b.ReportMetric(float64(started)/n, "started/cycle")
	b.ReportMetric(float64(nh*10), "VMs")
	// Moves finish on the driver's virtual clock.
	for i := 0; len(c.InFlight()) > 0 && i < 100000; i++ {
		d.Advance(time.Second)
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c.Wait()
	debug.FreeOSMemory()
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSMiB is VmHWM from /proc/self/status (0 where there is none).
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
