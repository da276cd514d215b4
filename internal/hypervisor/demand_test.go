package hypervisor

import (
	"testing"
	"time"

	"github.com/headroom/headroom/internal/model"
)

// TestSnapshotDemandAllResources: a VM's snapshot demand has its CPU, the guest's
// own used memory (not its configured size), and its network and disk rates,
// rx+tx and read+write; the host's utilisation stays CPU's.
func TestSnapshotDemandAllResources(t *testing.T) {
	hosts := []Host{{ID: "a", Capacity: model.Resources{CPU: 2000, Mem: 1024, Net: 1000, Disk: 1000}, PEs: 1, PEMIPS: 2000}}
	size := model.Resources{CPU: 2000, Mem: 512}
	vms := []VM{{ID: "v", Host: "a", State: StateRunning, VCPUs: 1, MemMiB: 512, Size: size}}
	st := Stats{VMs: []VMStats{{VM: "v", Host: "a", Interval: 3 * time.Second, VCPUs: 1, CPUUtil: 0.25,
		MemMiB: 512, RSSMiB: 600, GuestUsedMiB: 140, NetRxKBps: 10, NetTxKBps: 300, DiskRdKBps: 5, DiskWrKBps: 700}}}
	snap := Snapshot(0, hosts, vms, st)
	want := model.Resources{CPU: 500, Mem: 140, Net: 310, Disk: 705}
	if got := snap.VMs[0].Demand; got != want {
		t.Fatalf("demand %+v, want %+v", got, want)
	}
	if u := snap.Hosts[0].Util; u != 0.25 {
		t.Errorf("host utilisation %v, want CPU's 0.25", u)
	}
}
