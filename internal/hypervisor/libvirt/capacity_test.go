package libvirt

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/model"
)

// TestCapacityOverride: a host of 2 cores at 2000 MHz and 8 GiB, as configured in
// different ways. Capacity is the host's total; a VM is sized vCPUs x the host's
// per-core MHz, so a vCPU busy on a core is demand that one core holds, and a
// 2-vCPU VM on it is twice that.
func TestCapacityOverride(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity model.Resources
		cores    int
		want     model.Resources
		pes      int
		peMHz    float64
	}{
		{"as reported", model.Resources{}, 0, model.Resources{CPU: 4000, Mem: 8192}, 2, 2000},
		// Lab hosts: a share of the machine, less than one core.
		{"0.9 of a core", model.Resources{CPU: 1800}, 0, model.Resources{CPU: 1800, Mem: 8192}, 1, 2000},
		{"1.5 cores, 4 GiB, a network", model.Resources{CPU: 3000, Mem: 4096, Net: 30000}, 0, model.Resources{CPU: 3000, Mem: 4096, Net: 30000}, 2, 2000},
		{"4 cores of this clock", model.Resources{}, 4, model.Resources{CPU: 8000, Mem: 8192}, 4, 2000},
		{"3 cores of 1000 MHz", model.Resources{CPU: 3000}, 3, model.Resources{CPU: 3000, Mem: 8192}, 3, 1000},
	} {
		g := newGuest(0.5)
		f := &fakeHost{cpus: 2, mhz: 2000, stats: func() ([]fakeDom, time.Duration) {
			d := g.dom("v", 1)
			d.params = domStats(1, g.read(), 2)
			return []fakeDom{d}, 0
		}}
		d, err := New(Config{
			Hosts:           []HostConfig{{ID: "a", URI: "qemu+tcp://a/system", Capacity: tc.capacity, Cores: tc.cores}},
			Dial:            fakeDial(map[string]*fakeHost{"a": f}),
			MinRateInterval: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		hs, err := d.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h := hs[0]
		if h.Capacity != tc.want || h.PEs != tc.pes || h.PEMIPS != tc.peMHz {
			t.Errorf("%s: host %+v, %d x %v MHz; want %+v, %d x %v MHz", tc.name, h.Capacity, h.PEs, h.PEMIPS, tc.want, tc.pes, tc.peMHz)
		}
		vms, err := d.VMs(ctx)
		if err != nil || len(vms) != 1 {
			t.Fatalf("%s: vms %+v %v", tc.name, vms, err)
		}
		if vms[0].Size.CPU != 2*h.PEMIPS {
			t.Errorf("%s: a 2-vCPU VM sized %v, want 2 x %v", tc.name, vms[0].Size.CPU, h.PEMIPS)
		}
		// The host's load is over its configured cores: half a core of CPU time
		// on a host of capacity / per-core MHz cores.
		d.Stats(ctx)
		time.Sleep(150 * time.Millisecond)
		st, err := d.Stats(ctx)
		if err != nil || len(st.Hosts) != 1 || st.VMs[0].Interval == 0 {
			t.Fatalf("%s: stats %+v %v", tc.name, st, err)
		}
		want := 0.5 / (h.Capacity.CPU / h.PEMIPS)
		if got := st.Hosts[0].CPUUtil; math.Abs(got-want) > 0.15*want {
			t.Errorf("%s: host utilisation %.3f, want %.3f", tc.name, got, want)
		}
		d.Close()
	}
	if _, err := New(Config{Hosts: []HostConfig{{ID: "a", URI: "qemu+tcp://a/system", Cores: -1}}}); err == nil {
		t.Error("negative cores accepted")
	}
}
