package demo

import (
	"context"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
)

func TestDemoCluster(t *testing.T) {
	d, err := New(Options{Dir: t.TempDir(), Speed: 300, Mode: controller.Approve})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vms, err := d.Driver.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]int{}
	for _, v := range vms {
		on[v.Host]++
	}
	if len(vms) != 30 || len(on) != 3 || on["host0"] != 10 {
		t.Errorf("%d VMs on %v, want 30 packed on 3 of the 6 hosts", len(vms), on)
	}
	if d.Config.Interval != time.Second || d.Config.Mode != controller.Approve || len(d.Config.Hosts) != 6 {
		t.Errorf("config %+v: want a 1 s interval (300 s of trace at speed 300), approve mode, 6 hosts", d.Config)
	}
	// The replay starts before the busiest hour: the packed hosts are loaded.
	st, err := d.Driver.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range st.Hosts {
		if h.Host == "host0" && !(h.CPUUtil > 0.5) {
			t.Errorf("host0 at %.2f of its CPU at the start, want a busy host", h.CPUUtil)
		}
	}
	// Between two trace samples the load is interpolated.
	s := d.series["vm00"]
	a, b := float64(d.w.VMs[s].CPU[10]), float64(d.w.VMs[s].CPU[11])
	if got := d.usage(s, 10.5*traceStep).CPUUtil; abs(got-(a+b)/2) > 1e-6 {
		t.Errorf("usage half-way between samples %v and %v: %v", a, b, got)
	}
	for _, bad := range []float64{-1, 1e9} {
		if _, err := New(Options{Dir: t.TempDir(), Speed: bad}); err == nil {
			t.Errorf("speed %v accepted", bad)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
