// Package model holds the types every other package speaks: resources, hosts, VMs,
// a cluster snapshot, forecasts and migration requests. It imports nothing of ours.
package model

// A live migration's energy, as measured by Liu et al. ("Performance and energy
// modeling for live migration of virtual machines", HPDC 2011) over the source,
// the destination and the link: E = 0.512 J per MB moved + 20.2 J. The policy
// weighs moves with it and the simulator counts it, so both use one figure.
const (
	MigrationJoulesPerMB = 0.512
	MigrationJoulesFixed = 20.2
)

// MigrationJoules is the energy of a live migration that moves mb MB.
func MigrationJoules(mb float64) float64 {
	return MigrationJoulesPerMB*mb + MigrationJoulesFixed
}

// Resources is a vector of the four resources headroom tracks. Units are the
// caller's, but must agree between a host's capacity and a VM's demand: CPU in
// MIPS-like capacity units, memory in MB, network and disk in KB/s.
type Resources struct {
	CPU  float64 `json:"cpu"`
	Mem  float64 `json:"mem"`
	Net  float64 `json:"net"`
	Disk float64 `json:"disk"`
}

// Add returns r+o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.CPU + o.CPU, r.Mem + o.Mem, r.Net + o.Net, r.Disk + o.Disk}
}

// Sub returns r-o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{r.CPU - o.CPU, r.Mem - o.Mem, r.Net - o.Net, r.Disk - o.Disk}
}

// Scale returns r*f.
func (r Resources) Scale(f float64) Resources {
	return Resources{r.CPU * f, r.Mem * f, r.Net * f, r.Disk * f}
}

// Fits reports whether r fits in capacity c on every resource; a zero capacity
// means "not tracked" and never binds.
func (r Resources) Fits(c Resources) bool {
	return (c.CPU == 0 || r.CPU <= c.CPU) && (c.Mem == 0 || r.Mem <= c.Mem) &&
		(c.Net == 0 || r.Net <= c.Net) && (c.Disk == 0 || r.Disk <= c.Disk)
}

// Resource names one dimension of Resources.
type Resource int

const (
	CPU Resource = iota
	Mem
	Net
	Disk
)

// AllResources lists the dimensions in a fixed order.
var AllResources = []Resource{CPU, Mem, Net, Disk}

func (k Resource) String() string {
	return [...]string{"cpu", "mem", "net", "disk"}[k]
}

// Get returns one dimension of r.
func (r Resources) Get(k Resource) float64 {
	switch k {
	case CPU:
		return r.CPU
	case Mem:
		return r.Mem
	case Net:
		return r.Net
	default:
		return r.Disk
	}
}

// Set sets one dimension of r.
func (r *Resources) Set(k Resource, v float64) {
	switch k {
	case CPU:
		r.CPU = v
	case Mem:
		r.Mem = v
	case Net:
		r.Net = v
	default:
		r.Disk = v
	}
}

// PowerCurve is a host's power draw in watts at 0, 10, ..., 100 % CPU (SPECpower style).
type PowerCurve [11]float64

// Power interpolates linearly between the tabulated points; u is clamped to [0,1].
func (p *PowerCurve) Power(u float64) float64 {
	if u <= 0 {
		return p[0]
	}
	if u >= 1 {
		return p[10]
	}
	x := u * 10
	i := int(x)
	return p[i] + (p[i+1]-p[i])*(x-float64(i))
}

// Host is one physical machine.
type Host struct {
	ID       string    `json:"id"`
	Capacity Resources `json:"capacity"`
	// PEs and PEMIPS describe the CPU's cores: a VM's per-vCPU demand must fit one PE.
	PEs    int     `json:"pes,omitempty"`
	PEMIPS float64 `json:"pe_mips,omitempty"`
	// Power is the host's power curve; zero means unknown.
	Power PowerCurve `json:"power,omitempty"`
	// Util is the host's measured CPU utilisation (0..1) at snapshot time. A host at 0
	// counts as switched off.
	Util float64 `json:"util"`
	// VMs lists the VM indices on this host, in placement order, including VMs
	// migrating in.
	VMs []int `json:"vms"`
	// Labels are free-form attributes used by VM-host rules and by RDMA detection.
	Labels map[string]string `json:"labels,omitempty"`
}

// VM is one virtual machine.
type VM struct {
	ID string `json:"id"`
	// Host is the index of the host the VM runs on (the source while migrating), -1 if none.
	Host int `json:"host"`
	// Size is what the VM was provisioned with: CPU in MIPS (all vCPUs), memory in MB.
	Size Resources `json:"size"`
	VCPU int       `json:"vcpus,omitempty"`
	// Demand is the VM's current requested resources.
	Demand Resources `json:"demand"`
	// Reserved is capacity the hypervisor holds for the VM whatever its demand, e.g. a
	// VM being created holds its full size until its workload starts.
	Reserved Resources `json:"reserved,omitempty"`
	// History is the VM's recent CPU utilisation as a fraction of Size.CPU, newest first.
	History []float64 `json:"history,omitempty"`
	// MigratingTo holds the hosts the VM is migrating to; empty when not migrating.
	MigratingTo []int `json:"migrating_to,omitempty"`
	// Group names the VM's policy group.
	Group string `json:"group,omitempty"`
	// LastMigration is when the VM's last migration ended (seconds, as Snapshot.Time);
	// 0 means never.
	LastMigration float64 `json:"last_migration,omitempty"`
	// DirtyRate is the measured memory dirty rate in MB/s, if known.
	DirtyRate float64 `json:"dirty_rate,omitempty"`
	// MigrationSeconds is how long moving the VM now would take, from a transfer
	// model that knows its dirty rate and the links; 0 means unknown, and the
	// core falls back to memory over half the host's bandwidth (CloudSim's rule).
	MigrationSeconds float64 `json:"migration_seconds,omitempty"`
}

// Migrating reports whether the VM has a migration in flight.
func (v *VM) Migrating() bool { return len(v.MigratingTo) > 0 }

// Snapshot is the cluster as the decision core sees it at one instant.
type Snapshot struct {
	Time float64 `json:"time"` // seconds since the start of the run
	// Interval is the decision period in seconds; detectors that look ahead use it.
	Interval float64 `json:"interval"`
	Hosts    []Host  `json:"hosts"`
	VMs      []VM    `json:"vms"`
	Rules    []Rule  `json:"rules,omitempty"`
}

// RuleKind says what a placement rule constrains.
type RuleKind string

const (
	Affinity         RuleKind = "affinity"           // VMs together
	AntiAffinity     RuleKind = "anti-affinity"      // VMs apart
	HostAffinity     RuleKind = "host-affinity"      // VMs on these hosts
	HostAntiAffinity RuleKind = "host-anti-affinity" // VMs never on these hosts
)

// Rule is a VM-VM or VM-host placement rule. Must rules are never broken;
// should rules only change scores.
type Rule struct {
	Name  string   `json:"name" yaml:"name"`
	Kind  RuleKind `json:"kind" yaml:"kind"`
	Must  bool     `json:"must" yaml:"must"`
	VMs   []string `json:"vms" yaml:"vms"`
	Hosts []string `json:"hosts,omitempty" yaml:"hosts,omitempty"`
}

// ResourceForecast is one VM's predicted demand over a horizon: one entry per step.
// Upper is the bound that holds with probability Confidence at each step.
type ResourceForecast struct {
	VMInstanceID       string      `json:"vm_instance_id"`
	Step               float64     `json:"step_seconds"`
	PredictedCPU       []float64   `json:"predicted_cpu"`
	PredictedMemory    []float64   `json:"predicted_memory"`
	PredictedNetworkIO []float64   `json:"predicted_network_io"`
	PredictedDiskIO    []float64   `json:"predicted_disk_io"`
	Upper              []Resources `json:"upper"`
	Confidence         float64     `json:"confidence"`
	// Peak is the largest demand the VM has shown in each resource over a recent
	// window (the forecast engine's last week); zero where unknown. Optional work
	// such as consolidation reads it: a forecast bound does not see a job's onset
	// coming, but a VM that reached a level once can reach it again.
	Peak Resources `json:"peak,omitzero"`
}

// Clamp bounds the forecast, point and upper bound, to what the VM can use: never
// below zero, and where a size means a limit, no more CPU than its vCPUs give or
// memory than it has. A model extrapolating a climb, or a bound widened by noisy
// history, would otherwise ask a host for room the VM can never take. Network and
// disk have no size. The simulator and the live controller both clamp, so their
// decisions see the same forecasts.
func (f *ResourceForecast) Clamp(size Resources) {
	clamp := func(x, limit float64) float64 {
		if limit > 0 {
			x = min(x, limit)
		}
		return max(x, 0)
	}
	for i := range f.PredictedCPU {
		f.PredictedCPU[i] = clamp(f.PredictedCPU[i], size.CPU)
	}
	for i := range f.PredictedMemory {
		f.PredictedMemory[i] = clamp(f.PredictedMemory[i], size.Mem)
	}
	for _, xs := range [][]float64{f.PredictedNetworkIO, f.PredictedDiskIO} {
		for i := range xs {
			xs[i] = max(xs[i], 0)
		}
	}
	for i := range f.Upper {
		u := &f.Upper[i]
		u.CPU, u.Mem = clamp(u.CPU, size.CPU), clamp(u.Mem, size.Mem)
		u.Net, u.Disk = max(u.Net, 0), max(u.Disk, 0)
	}
	p := &f.Peak
	p.CPU, p.Mem = clamp(p.CPU, size.CPU), clamp(p.Mem, size.Mem)
	p.Net, p.Disk = max(p.Net, 0), max(p.Disk, 0)
}

// Horizon is the number of steps the forecast covers.
func (f *ResourceForecast) Horizon() int { return len(f.PredictedCPU) }

// Point returns the point forecast at step i as a vector.
func (f *ResourceForecast) Point(i int) Resources {
	var r Resources
	if i < len(f.PredictedCPU) {
		r.CPU = f.PredictedCPU[i]
	}
	if i < len(f.PredictedMemory) {
		r.Mem = f.PredictedMemory[i]
	}
	if i < len(f.PredictedNetworkIO) {
		r.Net = f.PredictedNetworkIO[i]
	}
	if i < len(f.PredictedDiskIO) {
		r.Disk = f.PredictedDiskIO[i]
	}
	return r
}

// TransferMode is how memory state is moved.
type TransferMode string

const (
	PreCopy      TransferMode = "pre-copy"
	AutoConverge TransferMode = "pre-copy+auto-converge"
	PostCopy     TransferMode = "post-copy"
)

// StateTransferOptions are the live-migration options of one move, and what the
// chooser predicted for them.
type StateTransferOptions struct {
	Mode              TransferMode `json:"mode,omitempty"`
	ParallelStreams   int          `json:"parallel_streams,omitempty"`
	Compression       string       `json:"compression,omitempty"`
	BandwidthMiBps    float64      `json:"bandwidth_mibps,omitempty"`
	MaxDowntimeMs     float64      `json:"max_downtime_ms,omitempty"`
	MigrateURI        string       `json:"migrate_uri,omitempty"`
	PredictedSeconds  float64      `json:"predicted_seconds,omitempty"`
	PredictedDowntime float64      `json:"predicted_downtime_ms,omitempty"`
	PredictedDataMiB  float64      `json:"predicted_data_mib,omitempty"`
}

// MigrationRequest is one move the core asks for.
type MigrationRequest struct {
	VMInstanceID         string               `json:"vm_instance_id"`
	TargetHostID         string               `json:"target_host_id"`
	Priority             int                  `json:"priority"`
	StateTransferOptions StateTransferOptions `json:"state_transfer_options"`
	// VM and Target are indices into the snapshot the request was made from.
	VM     int    `json:"-"`
	Target int    `json:"-"`
	Reason Reason `json:"reason"`
}

// Reason explains a decision: which rule fired, on what evidence, and what was rejected.
type Reason struct {
	Rule        string   `json:"rule"`
	Detail      string   `json:"detail,omitempty"`
	Probability float64  `json:"probability,omitempty"`
	Rejected    []string `json:"rejected,omitempty"`
}

// Priorities: overload relief goes before consolidation.
const (
	PriorityConsolidate = 10
	PriorityMaintenance = 50
	PriorityOverload    = 100
)
