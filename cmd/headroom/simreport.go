package main

import (
	"fmt"

	"github.com/headroom/headroom/internal/report"
	"github.com/headroom/headroom/internal/sim"
	"github.com/headroom/headroom/internal/trace"
)

// writeSimReport writes an HTML report that compares the runs side by side.
func writeSimReport(dir string, w *trace.Workload, rs []*sim.Result) (string, error) {
	tbl := report.Table{
		Caption: "Summary (SLA figures are fractions)",
		Header:  []string{"policy", "energy kWh", "hosts kWh", "migration kWh", "migrations", "SLATAH", "PDM", "SLAV", "ESV", "no suitable host", "wall s"},
		Best:    []report.Goal{report.NoGoal, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter},
	}
	for _, r := range rs {
		tbl.Rows = append(tbl.Rows, []string{r.Policy, fmt.Sprintf("%.2f", r.EnergyKWh), fmt.Sprintf("%.2f", r.HostEnergyKWh), fmt.Sprintf("%.2f", r.MigrationEnergyKWh), fmt.Sprint(r.Migrations),
			fmt.Sprintf("%.4f", r.SLATAH), fmt.Sprintf("%.5f", r.PDM), fmt.Sprintf("%.3g", r.SLAV), fmt.Sprintf("%.3g", r.ESV),
			fmt.Sprint(r.Unplaced), fmt.Sprintf("%.2f", r.WallSeconds)})
	}
	chart := func(title, y string, pick func(*sim.Series) []float64) report.Chart {
		c := report.Chart{Title: title, XLabel: "time (h)", YLabel: y}
		for _, r := range rs {
			x := make([]float64, len(r.Series.Time))
			for i, t := range r.Series.Time {
				x[i] = t / 3600
			}
			c.Lines = append(c.Lines, report.Line{Name: r.Policy, X: x, Y: pick(&r.Series)})
		}
		return c
	}
	hosts, vms := 0, 0
	if len(rs) > 0 {
		hosts, vms = rs[0].Hosts, rs[0].VMs
	}
	page := report.Page{
		Title: "headroom simulate: " + w.Name,
		Intro: fmt.Sprintf("%d VMs from %s on %d modelled hosts, one decision every %.0f s. "+
			"Values are taken at each decision, after the migrations it started.", vms, w.Name, hosts, w.Step),
		Sections: []report.Section{
			{Heading: "Results", Tables: []report.Table{tbl}},
			{Heading: "Over time", Charts: []report.Chart{
				chart("Active hosts", "hosts", func(s *sim.Series) []float64 { return s.ActiveHosts }),
				chart("Overloaded hosts (allocated < requested)", "hosts", func(s *sim.Series) []float64 { return s.OverloadedHosts }),
				chart("Migrations per interval", "migrations", func(s *sim.Series) []float64 { return s.Migrations }),
				chart("Energy (cumulative)", "kWh", func(s *sim.Series) []float64 { return s.EnergyKWh }),
			}},
		},
	}
	return report.Write(dir, page)
}
