package sim

import (
	"fmt"
	"math"
	"slices"

	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
)

// HostType is one kind of physical machine in the modelled data centre.
type HostType struct {
	Name   string
	PEs    int
	PEMIPS float64
	MemMB  float64
	NetKBs float64 // network capacity in KB/s (1 Gbit/s = 125,000)
	Power  model.PowerCurve
	// CPU is the host's total CPU when PEs is 0 (a host without a per-core limit).
	CPU float64
	// DiskKBs is disk throughput capacity in KB/s; 0 means untracked.
	DiskKBs float64
}

// VMType is one VM size; VMs get types in blocks, as CloudSim assigns them.
type VMType struct {
	MIPS  float64
	MemMB float64
}

// The classic experiment's machines (Beloglazov & Buyya 2012; SPECpower figures).
var (
	HPProLiantG4 = HostType{Name: "HP ProLiant ML110 G4", PEs: 2, PEMIPS: 1860, MemMB: 4096, NetKBs: 125000,
		Power: model.PowerCurve{86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117}}
	HPProLiantG5 = HostType{Name: "HP ProLiant ML110 G5", PEs: 2, PEMIPS: 2660, MemMB: 4096, NetKBs: 125000,
		Power: model.PowerCurve{93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135}}
	PlanetLabVMTypes = []VMType{{2500, 870}, {2000, 1740}, {1000, 1740}, {500, 613}}
)

// Config describes the modelled data centre and run.
type Config struct {
	Hosts     int        // number of hosts; types alternate in HostTypes order
	HostTypes []HostType // default G4, G5
	VMTypes   []VMType   // default PlanetLabVMTypes
	Interval  float64    // decision period in seconds; default: the trace step
	Duration  float64    // seconds simulated; default: the trace length
	// MigrationShare is the share of a VM's demand it keeps while migrating (CloudSim: 0.9).
	MigrationShare float64
	// HistoryLength is how many past utilisation values each VM keeps (CloudSim: 30).
	HistoryLength int
	// Offset shifts every decision past the interval boundary (CloudSim's events land
	// at 300.1, 600.1, ... s), which decides where demand is interpolated.
	Offset float64
	// KeepIdleVMs turns off CloudSim's rule that a VM requesting exactly no CPU at an
	// update has finished and leaves the cluster for good. CloudSim's published figures
	// depend on that rule (about half the PlanetLab VMs leave during a day).
	KeepIdleVMs bool
	// MultiResource drives all four resources from the trace (Bitbrains): demand in
	// CPU (MHz), memory (MB), network and disk (KB/s), VM sizes from the trace's
	// provisioned CPU and memory (VMTypes unused), and contention counted in each
	// resource. Off, the run is CloudSim's CPU-only experiment.
	MultiResource bool
}

// ConfigFor is the default scenario for w: BitbrainsConfig for a Bitbrains trace,
// CloudSim's PlanetLab experiment (DefaultConfig) for any other.
func ConfigFor(w *trace.Workload) Config {
	if w.Kind == "bitbrains" {
		return BitbrainsConfig(w)
	}
	return DefaultConfig()
}

// BitbrainsConfig is the default multi-resource scenario for w. Host sizes follow
// one rule, the same in every resource, from the trace and not from any policy's
// results (DerivedHostType): a host holds the largest demand that any single VM
// sustains 99 % of the time, and a VM's demand is clipped at its host's capacity,
// since a VM cannot use more than its host has. No VM alone ever exceeds its host,
// so any contention comes from co-location, which is what placement decides. There
// are as many hosts as VMs, so no placement ever lacks a host; idle hosts are off
// and draw nothing. Power is the HP ProLiant G5 curve (SPECpower), scaled by
// nothing: energy compares policies. Idle VMs stay (a business VM at 0 % CPU still
// holds its memory).
func BitbrainsConfig(w *trace.Workload) Config {
	c := DefaultConfig()
	c.Hosts = max(len(w.VMs), 1)
	c.KeepIdleVMs = true
	c.MultiResource = true
	c.HostTypes = []HostType{DerivedHostType(w)}
	return c
}

// HostQuantile is the share of its samples in which a VM's demand fits its host
// under DerivedHostType. Links and disks are provisioned for sustained load,
// not for a tenant's rarest five-minute burst (bandwidth is commonly bought and
// billed at the 95th percentile); 99 % is the more generous of the usual levels.
const HostQuantile = 0.99

// DerivedHostType is BitbrainsConfig's host: per resource, the largest
// HostQuantile-quantile of any one VM's demand over the whole trace.
func DerivedHostType(w *trace.Workload) HostType {
	t := HostType{Name: "largest single-VM 99th-percentile demand", Power: HPProLiantG5.Power}
	var xs []float64
	for _, r := range model.AllResources {
		top := 0.0
		for i := range w.VMs {
			s := &w.VMs[i]
			xs = xs[:0]
			for k := range s.CPU {
				xs = append(xs, seriesDemand(s, k).Get(r))
			}
			if len(xs) == 0 {
				continue
			}
			slices.Sort(xs)
			top = max(top, xs[int(math.Ceil(HostQuantile*float64(len(xs))))-1])
		}
		switch r {
		case model.CPU:
			t.CPU = top
		case model.Mem:
			t.MemMB = top
		case model.Net:
			t.NetKBs = top
		default:
			t.DiskKBs = top
		}
	}
	return t
}

// seriesDemand is sample k of s as demand: CPU and memory fractions times what the
// VM was provisioned with, network and disk as given.
func seriesDemand(s *trace.Series, k int) model.Resources {
	var d model.Resources
	d.CPU = float64(s.CPU[k]) * s.CPUCapacity
	if k < len(s.Mem) {
		d.Mem = float64(s.Mem[k]) * s.MemCapacity
	}
	if k < len(s.Net) {
		d.Net = float64(s.Net[k])
	}
	if k < len(s.Disk) {
		d.Disk = float64(s.Disk[k])
	}
	return d
}

// DefaultConfig is CloudSim's PlanetLab experiment: 800 hosts, 300 s, one day.
func DefaultConfig() Config {
	return Config{Hosts: 800, HostTypes: []HostType{HPProLiantG4, HPProLiantG5}, VMTypes: PlanetLabVMTypes,
		MigrationShare: 0.9, HistoryLength: 30, Offset: 0.1}
}

// fill derives what the workload decides (interval, duration) and checks the rest.
func (c *Config) fill(w *trace.Workload) error {
	if c.Interval == 0 {
		c.Interval = w.Step
	}
	if c.Duration == 0 {
		c.Duration = w.Step * float64(w.Len())
	}
	switch {
	case c.Hosts <= 0:
		return fmt.Errorf("hosts: %d must be positive", c.Hosts)
	case len(c.HostTypes) == 0 || len(c.VMTypes) == 0:
		return fmt.Errorf("host and VM types: need at least one of each")
	case c.MigrationShare <= 0 || c.MigrationShare > 1:
		return fmt.Errorf("migration share: %g must be in (0, 1]", c.MigrationShare)
	case c.HistoryLength <= 0:
		return fmt.Errorf("history length: %d must be positive", c.HistoryLength)
	case c.Interval <= 0 || math.IsNaN(c.Interval):
		return fmt.Errorf("interval: %g must be positive", c.Interval)
	case c.MultiResource && w.Kind == "planetlab":
		return fmt.Errorf("workload %s: a multi-resource run needs memory, network and disk series (bitbrains)", w.Name)
	case w.Len() < 2:
		return fmt.Errorf("workload %s: needs at least 2 samples, has %d", w.Name, w.Len())
	case len(w.VMs) == 0:
		return fmt.Errorf("workload %s: has no VMs", w.Name)
	}
	return nil
}

// buildSnapshot lays out hosts and VMs as CloudSim does: host i of type i mod
// len(types); VM i of type floor(i / ceil(n / len(VMTypes))). VMs start unplaced and
// hold their full size, as VMs being created do, while their load has not started.
func buildSnapshot(c *Config, w *trace.Workload) *model.Snapshot {
	s := &model.Snapshot{Interval: c.Interval}
	s.Hosts = make([]model.Host, c.Hosts)
	for i := range s.Hosts {
		t := c.HostTypes[i%len(c.HostTypes)]
		cpu := float64(t.PEs) * t.PEMIPS
		if t.PEs == 0 {
			cpu = t.CPU
		}
		s.Hosts[i] = model.Host{
			ID:       fmt.Sprintf("host-%d", i),
			Capacity: model.Resources{CPU: cpu, Mem: t.MemMB, Net: t.NetKBs, Disk: t.DiskKBs},
			PEs:      t.PEs,
			PEMIPS:   t.PEMIPS,
			Power:    t.Power,
		}
	}
	n := len(w.VMs)
	block := int(math.Ceil(float64(n) / float64(len(c.VMTypes))))
	s.VMs = make([]model.VM, n)
	for i := range s.VMs {
		if c.MultiResource {
			// Sized as provisioned; placed on what it uses at the start, since a
			// business VM arrives running, not empty.
			tv := &w.VMs[i]
			s.VMs[i] = model.VM{
				ID:       tv.ID,
				Host:     -1,
				Size:     model.Resources{CPU: tv.CPUCapacity, Mem: tv.MemCapacity},
				VCPU:     1,
				Reserved: seriesDemand(tv, 0),
				History:  make([]float64, 0, c.HistoryLength),
			}
			continue
		}
		t := c.VMTypes[min(i/block, len(c.VMTypes)-1)]
		s.VMs[i] = model.VM{
			ID:       w.VMs[i].ID,
			Host:     -1,
			Size:     model.Resources{CPU: t.MIPS, Mem: t.MemMB},
			VCPU:     1,
			Reserved: model.Resources{CPU: t.MIPS, Mem: t.MemMB},
			History:  make([]float64, 0, c.HistoryLength),
		}
	}
	return s
}
