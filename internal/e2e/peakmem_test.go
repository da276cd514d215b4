package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
)

// memPeak runs the recurring-peak scenario (see peak_test.go) on the in-memory
// cluster, on a virtual clock: the same controller, policy and timings, with
// migrations modelled instead of real. It returns host a's saturated seconds and
// the first migration's start, both counted from the step up, and the number of
// migrations after it.
func memPeak(t *testing.T, policy string) (saturated, firstMove float64, migrations int) {
	t.Helper()
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b", "c"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 1, PEMIPS: 1000, Capacity: model.Resources{CPU: 900, Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{BandwidthMiBps: 100}, hs...)
	for _, id := range []string{"cyc", "base"} {
		vm := hypervisor.VM{ID: id, Host: "a", VCPUs: 1, MemMiB: 256, Size: model.Resources{CPU: 1000, Mem: 256}, State: hypervisor.StateRunning}
		if err := d.AddVM(vm, memory.Usage{CPUUtil: 0.05, DirtyMiBps: 2}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := memController(t, d, controller.Config{Interval: interval, Mode: controller.Auto, Policy: policy, Hosts: hcs,
		MaxDowntime: maxDowntime, MaxBandwidthMiBps: peakCapMiBps, ForecastDay: peakDay})
	step := int(peakLearn / interval)
	period := int(peakDay / interval)
	firstMove = -1
	for i := range step + int(peakWatch/interval) {
		cyc, base := 0.05, 0.05
		if i%period >= period*2/3 {
			cyc = 0.55
		}
		if i >= step {
			base = 0.5
		}
		d.SetUsage("cyc", memory.Usage{CPUUtil: cyc, DirtyMiBps: 2})
		d.SetUsage("base", memory.Usage{CPUUtil: base, DirtyMiBps: 2})
		cy, err := c.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		at := float64(i-step) * interval.Seconds()
		if i >= step {
			migrations += len(cy.Started)
			if len(cy.Started) > 0 && firstMove < 0 {
				firstMove = at
			}
			if cy.Snapshot.Hosts[0].Util >= 1 {
				saturated += interval.Seconds()
			}
		}
		// Let the migrations' watchers see the clock move, a tenth at a time.
		for range 10 {
			d.Advance(interval / 10)
			time.Sleep(time.Millisecond)
		}
	}
	d.Advance(time.Hour)
	return saturated, firstMove, migrations
}

// TestPredictedPeakWithoutLab pins the scenario's logic without a lab: headroom
// moves before the first peak after the step up and host a never saturates;
// THR-MMT reacts inside the peak, saturates, and consolidates the guest back
// onto host a between peaks.
func TestPredictedPeakWithoutLab(t *testing.T) {
	sat, first, n := memPeak(t, writePolicy(t, peakPolicy))
	t.Logf("headroom: saturated %.0f s, first move %.0f s after the step up, %d migrations", sat, first, n)
	// The step up comes at the start of a period, so the first peak after it
	// starts 30 s later.
	if first < 0 || first >= 30 || sat > 0 {
		t.Errorf("headroom: first move at %.0f s, saturated %.0f s; want a move before the peak at 30 s and no saturation", first, sat)
	}
	tsat, tfirst, tn := memPeak(t, "thr-mmt-0.8")
	t.Logf("thr-mmt-0.8: saturated %.0f s, first move %.0f s after the step up, %d migrations", tsat, tfirst, tn)
	if tsat <= sat || tn <= n {
		t.Errorf("thr-mmt-0.8 saturated %.0f s with %d migrations, headroom %.0f s with %d", tsat, tn, sat, n)
	}
}
