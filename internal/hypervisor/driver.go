// Package hypervisor is the controller's view of the machines it moves VMs between:
// a Driver lists hosts and VMs, samples their load, live-migrates a VM with chosen
// state-transfer options, watches and aborts the move, and confirms where a VM runs.
//
// Implementations: libvirt/ (real hosts through go-libvirt) and memory/ (an
// in-memory cluster for unit tests of the control loop).
package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/model"
)

// Driver is one cluster of hypervisor hosts. Methods are safe for concurrent use.
// VMs and hosts are named by ID: a host's configured ID and a VM's (domain) name,
// which is unique across the cluster.
type Driver interface {
	// Hosts lists the hosts with their capacities. An unreachable host is listed
	// with Err set, not dropped, so the caller can tell "down" from "gone".
	Hosts(ctx context.Context) ([]Host, error)
	// VMs lists the running (or paused) VMs on every reachable host. The error is a
	// *HostError (or several, joined) for hosts that could not be asked.
	VMs(ctx context.Context) ([]VM, error)
	// Stats samples every running VM and host. A VM's rates and utilisation cover
	// exactly its Interval, which ends at its sample's Time: normally the time
	// since the previous Stats call, longer if that was too recent or could not
	// be timed (a driver may measure from an earlier sample). Interval 0 means no
	// rates: the VM's first sample on a host, in a new QEMU process or since it
	// started running there (an incoming migration), or no earlier sample good
	// to measure from. Partial results come with a *HostError.
	Stats(ctx context.Context) (Stats, error)
	// Migrate starts a live migration of vm to the target host and returns at once.
	Migrate(ctx context.Context, vm, target string, opts model.StateTransferOptions) (Migration, error)
	// Abort cancels vm's migration in flight, whether or not this process started
	// it. ErrNoMigration if there is none; post-copy moves cannot be aborted.
	Abort(ctx context.Context, vm string) error
	// Adopt follows a migration of vm to target that this driver did not start:
	// one a previous controller process started, which the hypervisor carries on
	// after it died. The Migration it returns watches the hypervisor's job to its
	// end, as Migrate's does, and can abort it. ErrNoMigration if no migration
	// job of vm runs.
	Adopt(ctx context.Context, vm, target string) (Migration, error)
	// Locate asks every host about vm and says where it runs. It answers from
	// the hosts it can reach: a VM running on one of them is found (hosts that
	// did not answer are listed in Location.Unreachable, without an error). Only
	// when no reachable host runs it and some host could not be asked is the
	// answer uncertain: ErrLocationUnknown, wrapping the hosts' errors.
	Locate(ctx context.Context, vm string) (Location, error)
	// Close releases connections. Migrations in flight carry on in the hypervisors.
	Close() error
}

// Host is one hypervisor host.
type Host struct {
	ID  string `json:"id"`
	URI string `json:"uri,omitempty"`
	// Capacity: CPU as cores x MHz (model's "MIPS-like" units), Mem in MB.
	Capacity model.Resources `json:"capacity"`
	// PEs cores of PEMIPS MHz each; one vCPU can use at most one. A VM's
	// Size.CPU on this host is its vCPUs x PEMIPS.
	PEs      int     `json:"pes"`
	PEMIPS   float64 `json:"pe_mips"`
	Hostname string  `json:"hostname,omitempty"`
	// Err is set when the host could not be reached.
	Err string `json:"error,omitempty"`
}

// VMState is a VM's run state on one host.
type VMState string

const (
	StateRunning  VMState = "running"
	StatePaused   VMState = "paused" // includes the pause at the end of a migration
	StateShutoff  VMState = "shutoff"
	StateOther    VMState = "other"
	StateNotFound VMState = "absent"
)

// Active reports whether the VM has a running QEMU in this state.
func (s VMState) Active() bool { return s == StateRunning || s == StatePaused }

// VM is one virtual machine on one host.
type VM struct {
	ID    string  `json:"id"`
	UUID  string  `json:"uuid,omitempty"`
	Host  string  `json:"host"`
	State VMState `json:"state"`
	VCPUs int     `json:"vcpus"`
	// MemMiB is the VM's configured (maximum) memory.
	MemMiB float64 `json:"mem_mib"`
	// Size is what it was provisioned with in the host's units: CPU = vCPUs x the
	// host's per-core MHz (Host.PEMIPS), Mem in MB.
	Size       model.Resources `json:"size"`
	Persistent bool            `json:"persistent"`
}

// VMStats is one VM's load over the last sampling interval.
type VMStats struct {
	VM       string        `json:"vm"`
	Host     string        `json:"host"`
	Time     time.Time     `json:"time"`
	Interval time.Duration `json:"interval"` // 0: first sample, rates unknown
	VCPUs    int           `json:"vcpus"`
	// CPUUtil is the VM's CPU use as a share of its vCPUs, 0..1: CPUCores over
	// VCPUs, capped at 1 because a vCPU cannot use more than a core, and the
	// decision core sizes and places a VM by its vCPUs.
	CPUUtil float64 `json:"cpu_util"`
	// CPUCores is the host CPU time QEMU used per second of Interval, all its
	// threads: emulator, I/O and migration work can take it past VCPUs. It is
	// the VM's share of the host's load (HostStats.CPUUtil), not guest demand.
	CPUCores   float64 `json:"cpu_cores"`
	CPUSeconds float64 `json:"cpu_seconds"` // cumulative, since the VM started on this host
	MemMiB     float64 `json:"mem_mib"`     // current balloon size, what the guest may use
	RSSMiB     float64 `json:"rss_mib"`     // resident on the host
	NetRxKBps  float64 `json:"net_rx_kbps"`
	NetTxKBps  float64 `json:"net_tx_kbps"`
	DiskRdKBps float64 `json:"disk_rd_kbps"`
	DiskWrKBps float64 `json:"disk_wr_kbps"`
	// DirtyMiBps is the measured memory dirty rate, when the hypervisor has one.
	DirtyMiBps float64 `json:"dirty_mibps,omitempty"`

	// GuestUsedMiB is the memory the guest itself uses (its total less what it
	// has available), from its balloon driver's statistics; 0 when it reports
	// none. RSS under-counts a guest that freed memory and over-counts QEMU's own.
	GuestUsedMiB float64 `json:"guest_used_mib,omitempty"`
}

// Demand is the VM's current use in model units, given its Size. Memory is
// the guest's own use when its balloon reports it, else QEMU's RSS (at most the
// balloon size).
func (s VMStats) Demand(size model.Resources) model.Resources {
	mem := s.RSSMiB
	if mem == 0 || (s.MemMiB > 0 && mem > s.MemMiB) {
		mem = s.MemMiB
	}
	if s.GuestUsedMiB > 0 {
		mem = s.GuestUsedMiB
	}
	return model.Resources{
		CPU:  s.CPUUtil * size.CPU,
		Mem:  mem,
		Net:  s.NetRxKBps + s.NetTxKBps,
		Disk: s.DiskRdKBps + s.DiskWrKBps,
	}
}

// HostStats is one host's load: the sum of its VMs'.
type HostStats struct {
	Host string `json:"host"`
	// CPUUtil is the VMs' CPU time (CPUCores, uncapped) over the host's cores.
	CPUUtil    float64 `json:"cpu_util"`
	MemUsedMiB float64 `json:"mem_used_mib"`
	VMs        int     `json:"vms"`
}

// Stats is one sample of the cluster.
type Stats struct {
	Time  time.Time   `json:"time"`
	Hosts []HostStats `json:"hosts"`
	VMs   []VMStats   `json:"vms"`
}

// Location is where a VM is, as the hosts that answered report it.
type Location struct {
	VM string `json:"vm"`
	// Host runs the VM; empty if none does or the answer is uncertain.
	Host string `json:"host"`
	// States holds the VM's state on each host that knows it (including inactive
	// definitions); hosts that could not be asked are in Unreachable.
	States      map[string]VMState `json:"states"`
	Unreachable []string           `json:"unreachable,omitempty"`
}

// Phase is where a migration is.
type Phase string

const (
	PhaseStarting  Phase = "starting"
	PhaseRunning   Phase = "running"  // pre-copy
	PhasePostCopy  Phase = "postcopy" // the VM runs on the target, pages still pulled
	PhaseCompleted Phase = "completed"
	PhaseFailed    Phase = "failed"
	PhaseCancelled Phase = "cancelled"
)

// Finished reports whether the migration is over.
func (p Phase) Finished() bool {
	return p == PhaseCompleted || p == PhaseFailed || p == PhaseCancelled
}

// Progress is one sample of a migration.
type Progress struct {
	VM     string    `json:"vm"`
	Source string    `json:"source"`
	Target string    `json:"target"`
	Phase  Phase     `json:"phase"`
	Time   time.Time `json:"time"`
	// Elapsed is the hypervisor's own job clock.
	Elapsed       time.Duration `json:"elapsed"`
	DataTotal     uint64        `json:"data_total"` // bytes
	DataProcessed uint64        `json:"data_processed"`
	DataRemaining uint64        `json:"data_remaining"`
	MemBps        float64       `json:"mem_bps"`         // transfer rate, bytes/s
	DirtyPagesPS  float64       `json:"dirty_pages_ps"`  // guest dirty rate, pages/s
	PageSize      uint64        `json:"page_size"`       // bytes
	Iteration     int           `json:"iteration"`       // pre-copy passes over memory
	Throttle      int           `json:"throttle_pct"`    // auto-converge CPU throttle
	PostcopyReqs  uint64        `json:"postcopy_faults"` // pages the target faulted in
	// Downtime and Setup are known once the migration completed.
	Downtime time.Duration `json:"downtime"`
	Setup    time.Duration `json:"setup"`
	Err      string        `json:"error,omitempty"`
}

// Fraction is the part of the data sent, 0..1 (0 when unknown).
func (p Progress) Fraction() float64 {
	if p.DataTotal == 0 {
		return 0
	}
	return float64(p.DataProcessed) / float64(p.DataTotal)
}

// Result is how a migration ended.
type Result struct {
	Progress
	// Wall is the time from Migrate to the end, as the controller saw it.
	Wall time.Duration `json:"wall"`
	// Verified: afterwards the VM ran on the target, and the source answered that
	// it no longer runs there. Hosts that did not answer are in Where.Unreachable.
	Verified bool     `json:"verified"`
	Where    Location `json:"where"`
}

// Migration is one live migration started by Migrate.
type Migration interface {
	VM() string
	Source() string
	Target() string
	Options() model.StateTransferOptions
	// Progress is the latest sample.
	Progress() Progress
	// Updates delivers samples while the migration runs (a slow reader misses some,
	// never the last) and is closed when it is over.
	Updates() <-chan Progress
	// Done is closed when the migration is over and Wait will not block.
	Done() <-chan struct{}
	// Wait returns the outcome; the error is non-nil unless the VM was moved and
	// verified on the target.
	Wait(ctx context.Context) (Result, error)
	// Abort asks the hypervisor to cancel the move (see Driver.Abort).
	Abort(ctx context.Context) error
}

// Errors the drivers return, to test with errors.Is.
var (
	ErrUnreachable = errors.New("host unreachable")
	ErrUnknownHost = errors.New("unknown host")
	ErrVMNotFound  = errors.New("vm not found")
	ErrNoMigration = errors.New("no migration in flight")
	ErrBusy        = errors.New("vm is already migrating")
	ErrBadOptions  = errors.New("bad migration options")
	ErrNotVerified = errors.New("migration finished but the vm is not (only) on the target")
	ErrAborted     = errors.New("migration cancelled")
	ErrCannotAbort = errors.New("migration cannot be aborted")
	ErrSameHost    = errors.New("vm already runs on the target host")
	ErrSplitBrain  = errors.New("vm runs on more than one host")
	// ErrLocationUnknown: no host that answered runs the VM, and some did not answer.
	ErrLocationUnknown = errors.New("vm location unknown")
	ErrMigrateFailed   = errors.New("migration failed")
)

// HostError is a failure to talk to one host.
type HostError struct {
	Host string
	URI  string
	Op   string
	Err  error
}

func (e *HostError) Error() string {
	return fmt.Sprintf("host %s (%s): %s: %v", e.Host, e.URI, e.Op, e.Err)
}

func (e *HostError) Unwrap() error { return e.Err }

// connectionFaults are how a lost or refused connection reads in libvirt's and
// Go's errors, lower case.
var connectionFaults = []string{
	"connection reset", "connection refused", "broken pipe", "end of file",
	"unable to connect", "no route to host", "network is unreachable",
	"i/o timeout", "connection timed out", "cannot recv data", "cannot write data",
	"unable to write to socket", "lost connection", "use of closed network connection", "closed pipe",
	"socket is closed", // libvirt, when the peer libvirtd died mid-migration
}

// IsConnectionError reports whether err says a host could not be reached or its
// connection was lost, rather than that the host refused or failed the
// operation: the host, not the VM or the request, is then at fault.
func IsConnectionError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, f := range connectionFaults {
		if strings.Contains(msg, f) {
			return true
		}
	}
	return false
}

// Execute carries out one MigrationRequest of the decision core.
func Execute(ctx context.Context, d Driver, req model.MigrationRequest) (Migration, error) {
	return d.Migrate(ctx, req.VMInstanceID, req.TargetHostID, req.StateTransferOptions)
}

// Snapshot turns a driver's view into the decision core's: hosts in the order given,
// VMs with their demand from stats, host utilisation as CPU demand over capacity.
// now is the snapshot's Time.
//
// A VM listed on two hosts is migrating between them: it appears once, on the host
// where it runs (the first listed if neither or both run it), with the other host
// in MigratingTo, since it holds room on both until the move ends. Its demand is
// from its own host's stats: a target's incoming QEMU is not the VM's load.
func Snapshot(now float64, hosts []Host, vms []VM, st Stats) model.Snapshot {
	snap := model.Snapshot{Time: now, Hosts: make([]model.Host, 0, len(hosts)), VMs: make([]model.VM, 0, len(vms))}
	hidx := make(map[string]int, len(hosts))
	for i, h := range hosts {
		hidx[h.ID] = i
		snap.Hosts = append(snap.Hosts, model.Host{
			ID: h.ID, Capacity: h.Capacity, PEs: h.PEs, PEMIPS: h.PEMIPS, VMs: []int{},
		})
	}
	type onHost struct{ vm, host string }
	stats := make(map[onHost]int, len(st.VMs)) // index in st.VMs; the last wins
	for i, s := range st.VMs {
		stats[onHost{s.VM, s.Host}] = i
	}
	primary := make(map[string]int, len(vms)) // VM ID: the index in vms of the copy that stands for it
	for i, v := range vms {
		j, seen := primary[v.ID]
		if !seen || (v.State == StateRunning && vms[j].State != StateRunning) {
			primary[v.ID] = i
		}
	}
	at := make(map[string]int, len(vms)) // VM ID: its index in snap.VMs
	for i, v := range vms {
		if primary[v.ID] != i {
			continue
		}
		hi, ok := hidx[v.Host]
		if !ok {
			hi = -1
		}
		mv := model.VM{ID: v.ID, Host: hi, Size: v.Size, VCPU: v.VCPUs}
		if j, ok := stats[onHost{v.ID, v.Host}]; ok {
			s := &st.VMs[j]
			mv.Demand = s.Demand(v.Size)
			mv.DirtyRate = s.DirtyMiBps * 1.048576 // MiB/s to MB/s
			if s.Interval > 0 {
				mv.History = []float64{s.CPUUtil}
			}
		}
		at[v.ID] = len(snap.VMs)
		snap.VMs = append(snap.VMs, mv)
		if hi >= 0 {
			h := &snap.Hosts[hi]
			h.VMs = append(h.VMs, at[v.ID])
			if h.Capacity.CPU > 0 {
				h.Util += mv.Demand.CPU / h.Capacity.CPU
			}
		}
	}
	for i, v := range vms {
		hi, ok := hidx[v.Host]
		if primary[v.ID] == i || !ok {
			continue
		}
		k := at[v.ID]
		mv := &snap.VMs[k]
		if hi != mv.Host && !slices.Contains(mv.MigratingTo, hi) {
			mv.MigratingTo = append(mv.MigratingTo, hi)
			snap.Hosts[hi].VMs = append(snap.Hosts[hi].VMs, k)
		}
	}
	return snap
}
