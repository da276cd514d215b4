package hypervisor

import (
	"slices"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/model"
)

// TestSnapshotOfAMigratingVM: mid-migration libvirt lists the VM on its source
// (running) and its target (paused, receiving). The snapshot has it once, on the
// source, with the source's stats, and marked as moving to the target; the
// target's receiving QEMU lends it neither demand nor history.
func TestSnapshotOfAMigratingVM(t *testing.T) {
	hosts := []Host{
		{ID: "a", Capacity: model.Resources{CPU: 4000, Mem: 8192}, PEs: 2, PEMIPS: 2000},
		{ID: "b", Capacity: model.Resources{CPU: 4000, Mem: 8192}, PEs: 2, PEMIPS: 2000},
	}
	size := model.Resources{CPU: 2000, Mem: 512}
	vms := []VM{ // the target's copy first: listing order is no promise
		{ID: "v", Host: "b", State: StatePaused, VCPUs: 1, MemMiB: 512, Size: size},
		{ID: "v", Host: "a", State: StateRunning, VCPUs: 1, MemMiB: 512, Size: size},
		{ID: "w", Host: "b", State: StateRunning, VCPUs: 1, MemMiB: 512, Size: size},
	}
	st := Stats{VMs: []VMStats{
		{VM: "v", Host: "a", Interval: 3 * time.Second, VCPUs: 1, CPUUtil: 0.3, MemMiB: 512, DirtyMiBps: 10},
		{VM: "w", Host: "b", Interval: 3 * time.Second, VCPUs: 1, CPUUtil: 0.5, MemMiB: 512},
		{VM: "v", Host: "b", Interval: 3 * time.Second, VCPUs: 1, CPUUtil: 0.9, MemMiB: 512},
	}}
	snap := Snapshot(0, hosts, vms, st)
	if len(snap.VMs) != 2 {
		t.Fatalf("%d VMs in the snapshot, want v and w once each: %+v", len(snap.VMs), snap.VMs)
	}
	var v *model.VM
	for i := range snap.VMs {
		if snap.VMs[i].ID == "v" {
			v = &snap.VMs[i]
		}
	}
	if v == nil || v.Host != 0 || !slices.Equal(v.MigratingTo, []int{1}) {
		t.Fatalf("v: %+v, want on a, migrating to b", v)
	}
	if v.Demand.CPU != 600 || !slices.Equal(v.History, []float64{0.3}) {
		t.Errorf("v: demand %v history %v, want the source's 0.3 of 2000", v.Demand.CPU, v.History)
	}
	if len(snap.Hosts[1].VMs) != 2 {
		t.Errorf("host b lists %v, want w and the incoming v", snap.Hosts[1].VMs)
	}
	if u := snap.Hosts[1].Util; u != 0.25 {
		t.Errorf("host b utilisation %v, want w's 1000 of 4000 alone", u)
	}
}
