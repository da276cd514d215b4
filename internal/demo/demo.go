// Package demo runs the live controller against an in-memory cluster whose VMs
// replay the embedded PlanetLab day in accelerated time, so that the dashboard,
// the API and /metrics can be seen working without a libvirt host.
package demo

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
	"github.com/headroom/headroom/internal/trace"
)

// Options shape the demo cluster.
type Options struct {
	// Speed is trace seconds per wall second (default 150: the 5-minute PlanetLab
	// step every 2 s, the day in under 10 minutes).
	Speed float64
	Mode  controller.Mode // default auto
	Hosts int             // default 6
	VMs   int             // default 30
	// Dir holds the event log and the demo's policy file (default: a new
	// temporary directory, removed by Close).
	Dir string
}

// Host sizes: 4 cores of 1000 MHz and 16 GiB; every VM has one vCPU (1000 MHz)
// and 1 GiB. The busiest VMs of the day start packed on the first hosts.
const (
	hostPEs    = 4
	hostPEMIPS = 1000
	hostMemMiB = 16384
	vmMemMiB   = 1024
	// The PlanetLab trace's step, in seconds.
	traceStep = 300
)

// Demo is a running demo cluster and its controller.
type Demo struct {
	Driver     *memory.Driver
	Controller *controller.Controller
	Log        *store.Log
	Config     controller.Config
	Speed      float64

	w      *trace.Workload
	series map[string]int // VM -> trace series
	tmp    string
	start  time.Time
	offset float64 // trace seconds where the replay starts
}

// New builds the cluster and the controller; Run starts them.
func New(opt Options) (*Demo, error) {
	if opt.Speed == 0 {
		opt.Speed = 150
	}
	if !(opt.Speed > 0) || math.IsInf(opt.Speed, 0) || opt.Speed > 3000 {
		return nil, fmt.Errorf("speed: %v must be above 0 and at most 3000", opt.Speed)
	}
	if opt.Mode == "" {
		opt.Mode = controller.Auto
	}
	if opt.Hosts == 0 {
		opt.Hosts = 6
	}
	if opt.VMs == 0 {
		opt.VMs = 30
	}
	if opt.Hosts < 2 || opt.VMs < 1 {
		return nil, fmt.Errorf("demo: needs at least 2 hosts and 1 VM")
	}
	w, err := trace.Sample()
	if err != nil {
		return nil, err
	}
	if opt.VMs > len(w.VMs) {
		return nil, fmt.Errorf("demo: the trace has %d VMs, not %d", len(w.VMs), opt.VMs)
	}
	d := &Demo{w: w, series: map[string]int{}, Speed: opt.Speed}
	if opt.Dir == "" {
		if d.tmp, err = os.MkdirTemp("", "headroom-demo-"); err != nil {
			return nil, err
		}
		opt.Dir = d.tmp
	}
	interval := time.Duration(float64(traceStep) / opt.Speed * float64(time.Second))
	// The shipped policy in trace time: a 30-minute horizon is 6 steps, the
	// 1-minute lead-time margin one step, the hour's cooldown 12 steps.
	pol := fmt.Sprintf(`horizon: %s
resources: [cpu, mem]
lead_time: {margin: %s}
anti_thrash: {cooldown: %s}
`, 6*interval, interval, 12*interval)
	polPath := filepath.Join(opt.Dir, "demo-policy.yaml")
	if err := os.WriteFile(polPath, []byte(pol), 0o600); err != nil {
		d.Close()
		return nil, err
	}
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for i := range opt.Hosts {
		id := "host" + strconv.Itoa(i)
		hs = append(hs, hypervisor.Host{ID: id, PEs: hostPEs, PEMIPS: hostPEMIPS, Capacity: model.Resources{Mem: hostMemMiB}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "memory://" + id})
	}
	d.Driver = memory.New(memory.Options{Realtime: true, BandwidthMiBps: 200}, hs...)
	// The busiest VMs of the day, packed onto half the hosts round-robin:
	// some hosts run hot at the day's peaks, and the rest start empty.
	picked := busiest(w, opt.VMs)
	packed := max(1, opt.Hosts/2)
	for k, s := range picked {
		id := fmt.Sprintf("vm%02d", k)
		d.series[id] = s
		vm := hypervisor.VM{ID: id, Host: hs[k%packed].ID, VCPUs: 1, MemMiB: vmMemMiB, State: hypervisor.StateRunning}
		if err := d.Driver.AddVM(vm, d.usage(s, busiestHour(w, picked))); err != nil {
			d.Close()
			return nil, err
		}
	}
	d.offset = busiestHour(w, picked)
	d.Config = controller.Config{Interval: interval, Mode: opt.Mode, Policy: "headroom:" + polPath, Hosts: hcs,
		EventLog: filepath.Join(opt.Dir, "demo-events.db"), ForecastDay: time.Duration(86400 / opt.Speed * float64(time.Second)),
		MaxConcurrent: 2, MaxPerHost: 1}
	d.Config.Defaults()
	if d.Log, err = store.Open(d.Config.EventLog); err != nil {
		d.Close()
		return nil, err
	}
	if d.Controller, err = controller.New(d.Config, d.Driver, d.Log); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// busiest picks the n series with the highest mean CPU up to busyMean, in trace order.
func busiest(w *trace.Workload, n int) []int {
	type s struct {
		i    int
		mean float64
	}
	all := make([]s, len(w.VMs))
	for i, v := range w.VMs {
		var sum float64
		for _, x := range v.CPU {
			sum += float64(x)
		}
		all[i] = s{i, sum / float64(max(1, len(v.CPU)))}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].mean > all[b].mean })
	// The busiest VMs run near their vCPU all day, which leaves nothing to
	// predict; start below a mean of busyMean.
	first := sort.Search(len(all), func(k int) bool { return all[k].mean <= busyMean })
	first = min(first, len(all)-n)
	out := make([]int, n)
	for k := range out {
		out[k] = all[first+k].i
	}
	sort.Ints(out)
	return out
}

// busyMean is the highest mean CPU of a demo VM.
const busyMean = 0.45

// busiestHour is the trace time half an hour before the picked VMs' busiest
// hour, where the replay starts so that the demo shows decisions at once.
func busiestHour(w *trace.Workload, picked []int) float64 {
	n := w.Len()
	total := make([]float64, n)
	for _, s := range picked {
		for i, x := range w.VMs[s].CPU {
			total[i] += float64(x)
		}
	}
	const hour = 3600 / traceStep
	best, at := -1.0, 0
	for i := range n {
		var sum float64
		for k := range hour {
			sum += total[(i+k)%n]
		}
		if sum > best {
			best, at = sum, i
		}
	}
	return math.Mod(float64(at*traceStep)-1800+86400, 86400)
}

// usage is series s's load at trace time t seconds (the day wraps), between
// samples linearly.
func (d *Demo) usage(s int, t float64) memory.Usage {
	cpu := d.w.VMs[s].CPU
	n := len(cpu)
	x := math.Mod(t/traceStep, float64(n))
	i := int(x)
	f := x - float64(i)
	u := float64(cpu[i])*(1-f) + float64(cpu[(i+1)%n])*f
	// Memory dirtied in proportion to the CPU load, for the transfer model.
	return memory.Usage{CPUUtil: u, MemMiB: vmMemMiB * 0.6, DirtyMiBps: 40 * u}
}

// TraceTime is the trace time (seconds into the day) the demo replays now.
func (d *Demo) TraceTime() float64 {
	return d.offset + time.Since(d.start).Seconds()*d.Speed
}

// Run replays the trace into the cluster and runs the controller until ctx ends;
// onCycle is Run's callback.
func (d *Demo) Run(ctx context.Context, onCycle func(controller.Cycle, error)) error {
	d.start = time.Now()
	tick := max(d.Config.Interval/4, 50*time.Millisecond)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				tt := d.TraceTime()
				for id, s := range d.series {
					d.Driver.SetUsage(id, d.usage(s, tt))
				}
			}
		}
	}()
	return d.Controller.Run(ctx, onCycle)
}

// Close closes the event log and the driver, and removes the temporary directory.
func (d *Demo) Close() {
	if d.Log != nil {
		d.Log.Close()
	}
	if d.Driver != nil {
		d.Driver.Close()
	}
	if d.tmp != "" {
		os.RemoveAll(d.tmp)
	}
}
