package sim

import (
	"math"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/sim/cloudsimref"
	"github.com/headroom/headroom/internal/trace"
)

// TestFidelityEmbeddedDay runs CloudSim's policies on the embedded PlanetLab day and
// checks energy, migrations and SLATAH against CloudSim 3.0.3's own figures. The issue
// allows ±10 %; we hold ourselves to ±5 %.
func TestFidelityEmbeddedDay(t *testing.T) {
	if testing.Short() {
		t.Skip("fidelity runs five full-day simulations")
	}
	w, err := trace.Sample()
	if err != nil {
		t.Fatal(err)
	}
	const tol = 0.05
	for _, name := range []string{"thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "dvfs"} {
		t.Run(name, func(t *testing.T) {
			ref, ok := cloudsimref.Find("20110303", name)
			if !ok {
				t.Fatalf("no CloudSim figures for %s", name)
			}
			pol, err := core.ParsePolicy(name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Run(w, pol, Options{})
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want float64) {
				if want == 0 {
					if got != 0 {
						t.Errorf("%s = %g, CloudSim %g", what, got, want)
					}
					return
				}
				if dev := got/want - 1; math.Abs(dev) > tol {
					t.Errorf("%s = %g, CloudSim %g: off by %+.1f%% (limit ±%.0f%%)", what, got, want, 100*dev, 100*tol)
				}
			}
			check("energy kWh", r.HostEnergyKWh, ref.EnergyKWh)
			check("migrations", float64(r.Migrations), float64(ref.Migrations))
			check("SLATAH", r.SLATAH, ref.SLATAH)
			t.Logf("%s: energy %.2f (CloudSim %.2f), migrations %d (%d), SLATAH %.4f (%.4f)",
				name, r.HostEnergyKWh, ref.EnergyKWh, r.Migrations, ref.Migrations, r.SLATAH, ref.SLATAH)
		})
	}
}

// BenchmarkSimulateLR is the speed target: 24 h, 800 hosts, 1052 VMs, lr-mmt-1.2
// (CloudSim takes about 20 s on this machine).
func BenchmarkSimulateLR(b *testing.B) {
	w, err := trace.Sample()
	if err != nil {
		b.Fatal(err)
	}
	pol, _ := core.ParsePolicy("lr-mmt-1.2")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Run(w, pol, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHeadroomBeatsCloudSimOnEmbeddedDay holds the proactive policy to the issue's
// targets against CloudSim 3.0.3's own figures for the embedded day.
func TestHeadroomBeatsCloudSimOnEmbeddedDay(t *testing.T) {
	if testing.Short() {
		t.Skip("a full-day simulation")
	}
	w, err := trace.Sample()
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := core.ParsePolicy("headroom")
	r, err := Run(w, pol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	best := math.Inf(1)
	for _, n := range []string{"thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2"} {
		ref, _ := cloudsimref.Find("20110303", n)
		best = math.Min(best, ref.ESV)
	}
	lr, _ := cloudsimref.Find("20110303", "lr-mmt-1.2")
	t.Logf("headroom: energy %.2f, migrations %d, ESV %.5f", r.EnergyKWh, r.Migrations, r.ESV)
	if x := r.ESV / best; x > 0.25 {
		t.Errorf("ESV %.5f is %.2f x the best CloudSim ESV %.5f (limit 0.25)", r.ESV, x, best)
	}
	if x := float64(r.Migrations) / float64(lr.Migrations); x > 0.2 {
		t.Errorf("migrations %d are %.2f x LR-MMT's %d (limit 0.2)", r.Migrations, x, lr.Migrations)
	}
	// CloudSim's figures count host power only, so headroom's host energy is
	// the like-for-like figure.
	if x := r.HostEnergyKWh / lr.EnergyKWh; x > 1.1 {
		t.Errorf("host energy %.2f is %.2f x LR-MMT's %.2f (limit 1.1)", r.HostEnergyKWh, x, lr.EnergyKWh)
	}
}
