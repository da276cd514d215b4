package sim

import (
	"math"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
)

func flatWorkload(n int, cpus ...float32) *trace.Workload {
	w := &trace.Workload{Name: "test", Step: 300}
	for i, c := range cpus {
		s := trace.Series{ID: string(rune('a' + i))}
		for k := 0; k < n; k++ {
			s.CPU = append(s.CPU, c)
		}
		w.VMs = append(w.VMs, s)
	}
	return w
}

func TestEnergyOfOneSteadyHost(t *testing.T) {
	// One 1000-MIPS VM at 50 % on a G4 host (3720 MIPS): utilisation 0.1344.
	w := flatWorkload(12, 0.5)
	cfg := DefaultConfig()
	cfg.Hosts = 2
	cfg.VMTypes = []VMType{{MIPS: 1000, MemMB: 613}}
	pol, _ := core.ParsePolicy("dvfs")
	r, err := Run(w, pol, Options{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	u := 500.0 / 3720
	p := HPProLiantG4.Power.Power(u)
	// Decisions at 300.1 ... 3300.1: 11 updates, 10 charged intervals of 300 s.
	want := p * 300 * 10 / 3.6e6
	if math.Abs(r.EnergyKWh-want) > 1e-9 {
		t.Errorf("energy %.9f kWh, want %.9f", r.EnergyKWh, want)
	}
	if r.SLATAH != 0 || r.Migrations != 0 || r.MigrationEnergyKWh != 0 || r.HostEnergyKWh != r.EnergyKWh {
		t.Errorf("SLATAH %g, migrations %d, migration energy %g: want 0, 0 and 0", r.SLATAH, r.Migrations, r.MigrationEnergyKWh)
	}
}

func TestIdleVMsLeaveUnlessKept(t *testing.T) {
	w := flatWorkload(12, 0.5, 0)
	cfg := DefaultConfig()
	cfg.Hosts = 4
	cfg.VMTypes = []VMType{{MIPS: 1000, MemMB: 613}}
	pol, _ := core.ParsePolicy("dvfs")
	r, _ := Run(w, pol, Options{Config: &cfg})
	keep := cfg
	keep.KeepIdleVMs = true
	r2, _ := Run(w, pol, Options{Config: &keep})
	// The idle VM shares host 0 with the busy one: it changes no energy but it does
	// change what is requested, so compare the SLA denominators through SLAOverall.
	if r.EnergyKWh != r2.EnergyKWh {
		t.Errorf("an idle VM changed energy: %g vs %g", r.EnergyKWh, r2.EnergyKWh)
	}
	// A VM alone on its host, idle for two samples and busy after: under CloudSim's
	// rule it leaves while idle and never comes back, so its host stays off.
	cfg.VMTypes = []VMType{{MIPS: 2000, MemMB: 1740}, {MIPS: 2000, MemMB: 1740}, {MIPS: 2000, MemMB: 1740}}
	w = flatWorkload(12, 0.5, 0.5, 0.5)
	copy(w.VMs[2].CPU, []float32{0.5, 0, 0, 0})
	keep = cfg
	keep.KeepIdleVMs = true
	a, _ := Run(w, pol, Options{Config: &cfg})
	b, _ := Run(w, pol, Options{Config: &keep})
	if !(a.EnergyKWh < b.EnergyKWh) {
		t.Errorf("energy with idle VMs leaving %g, kept %g: leaving must save the idle host's power", a.EnergyKWh, b.EnergyKWh)
	}
}

func TestMigrationCostsPDMAndTargetSLA(t *testing.T) {
	// Three 2500-MIPS VMs at 100 %, 10 % and 90 % on two G5 hosts (5320 MIPS). Initial
	// best fit puts the first and third together; THR 0.8 moves the first (least RAM,
	// first in order) to the other host once, and the move costs 10 % of its 2500 MIPS
	// for 870 MB / 62.5 MB/s = 13.92 s, while its target counts as violating.
	w := flatWorkload(4, 1, 0.1, 0.9)
	cfg := DefaultConfig()
	cfg.Hosts = 2
	cfg.HostTypes = []HostType{HPProLiantG5}
	cfg.VMTypes = []VMType{{MIPS: 2500, MemMB: 870}}
	pol, _ := core.ParsePolicy("thr-mmt-0.8")
	r, err := Run(w, pol, Options{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if r.Migrations != 1 {
		t.Fatalf("%d migrations, want 1", r.Migrations)
	}
	// Requested: 5000 MIPS over the charged 300.1..900.1 s.
	want := 0.1 * 2500 * 13.92 / (5000 * 600)
	if math.Abs(r.PDM/want-1) > 1e-6 {
		t.Errorf("PDM %g, want %g", r.PDM, want)
	}
	// SLATAH: the target host is violating for 13.92 s of the two hosts' 1200 s.
	if math.Abs(r.SLATAH/(13.92/1200)-1) > 1e-6 {
		t.Errorf("SLATAH %g, want %g", r.SLATAH, 13.92/1200)
	}
	// The move copies 870 MB: 0.512 J/MB x 870 + 20.2 J (Liu et al.), on top of
	// the hosts' power, and CloudSim's ESV stays on host energy.
	if want := (0.512*870 + 20.2) / 3.6e6; math.Abs(r.MigrationEnergyKWh/want-1) > 1e-9 {
		t.Errorf("migration energy %g kWh, want %g", r.MigrationEnergyKWh, want)
	}
	if r.HostEnergyKWh <= 0 || r.EnergyKWh != r.HostEnergyKWh+r.MigrationEnergyKWh {
		t.Errorf("energy %g kWh, want hosts %g + migrations %g", r.EnergyKWh, r.HostEnergyKWh, r.MigrationEnergyKWh)
	}
	if r.ESV != r.HostEnergyKWh*r.SLAV {
		t.Errorf("ESV %g, want host energy x SLAV %g", r.ESV, r.HostEnergyKWh*r.SLAV)
	}
	if n := len(r.Series.EnergyKWh); n == 0 || r.Series.EnergyKWh[n-1] != r.EnergyKWh {
		t.Errorf("the cumulative energy series must end at the run's energy %g", r.EnergyKWh)
	}
}

func TestMustRulesHoldForHeadroomAndAreCaughtForCloudSim(t *testing.T) {
	if testing.Short() {
		t.Skip("two full-day runs")
	}
	w, err := trace.Sample()
	if err != nil {
		t.Fatal(err)
	}
	var rs []model.Rule
	// Pair the first 100 VMs: 50 anti-affinity pairs.
	for i := 0; i+1 < 100; i += 2 {
		rs = append(rs, model.Rule{Name: "p", Kind: model.AntiAffinity, Must: true, VMs: []string{w.VMs[i].ID, w.VMs[i+1].ID}})
	}
	h, _ := core.ParsePolicy("headroom")
	r, err := Run(w, h, Options{Rules: rs})
	if err != nil {
		t.Fatal(err)
	}
	if r.RuleViolations != 0 {
		t.Errorf("headroom broke must rules %d times: %v", r.RuleViolations, r.RuleExamples)
	}
	// CloudSim's policies ignore rules; the invariant must see that.
	l, _ := core.ParsePolicy("lr-mmt-1.2")
	r, _ = Run(w, l, Options{Rules: rs})
	if r.RuleViolations == 0 {
		t.Error("the invariant saw no violation from a policy that ignores rules")
	}
}

func TestConfigErrors(t *testing.T) {
	w := flatWorkload(4, 0.5)
	pol, _ := core.ParsePolicy("dvfs")
	for name, edit := range map[string]func(*Config){
		"hosts":           func(c *Config) { c.Hosts = 0 },
		"migration share": func(c *Config) { c.MigrationShare = 2 },
		"interval":        func(c *Config) { c.Interval = -1 },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if _, err := Run(w, pol, Options{Config: &cfg}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming it", name, err)
		}
	}
	cfg := DefaultConfig()
	cfg.Hosts = 1
	cfg.VMTypes = []VMType{{MIPS: 2500, MemMB: 870}}
	big := flatWorkload(4, 0.5, 0.5, 0.5)
	if _, err := Run(big, pol, Options{Config: &cfg}); err == nil || !strings.Contains(err.Error(), core.NoSuitableHost) {
		t.Errorf("three 2500-MIPS VMs on one host: error %v, want %q", err, core.NoSuitableHost)
	}
}
