package backtest

import (
	"fmt"
	"strings"

	"github.com/headroom/headroom/internal/report"
)

// MAERatio is a model's MAE over mean12's on the same resource, NaN if absent.
func (r *Result) MAERatio(name, resource string) float64 {
	var m, b float64
	m, b = -1, -1
	for _, s := range r.Models {
		if s.Resource != resource {
			continue
		}
		if s.Name == name {
			m = s.MAE
		}
		if s.Name == "mean12" {
			b = s.MAE
		}
	}
	if m < 0 || b <= 0 {
		return ratio(0, 0)
	}
	return m / b
}

// Table is the result as rows: model, resource, MAE, MAE/mean12, RMSE,
// pinball, coverage, n.
func (r *Result) Table() report.Table {
	t := report.Table{
		Caption: fmt.Sprintf("%s, %d steps ahead, upper bound at %g%s", r.Workload, r.Horizon, r.Confidence, r.subset()),
		Header:  []string{"model", "resource", "MAE", "MAE / mean12", "RMSE", "pinball", "coverage", "n"},
		Best:    []report.Goal{report.NoGoal, report.NoGoal, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter, report.LowerIsBetter},
	}
	for _, s := range r.Models {
		t.Rows = append(t.Rows, []string{s.Name, s.Resource, num(s.MAE), fmt.Sprintf("%.3f", r.MAERatio(s.Name, s.Resource)),
			num(s.RMSE), num(s.Pinball), fmt.Sprintf("%.3f", s.Coverage), fmt.Sprint(s.N)})
	}
	return t
}

// subset says which origins were scored when not all were.
func (r *Result) subset() string {
	var s string
	if r.EveryVM > 1 {
		s = fmt.Sprintf("; every %d%s VM (%d VMs)", r.EveryVM, ordinal(r.EveryVM), r.VMs)
	}
	if r.Every > 1 {
		s += fmt.Sprintf("; every %d%s origin from sample %d on", r.Every, ordinal(r.Every), r.Warmup)
	}
	if s != "" {
		s += " (all rows scored on the same subset)"
	}
	return s
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return "th"
	case n%10 == 1:
		return "st"
	case n%10 == 2:
		return "nd"
	case n%10 == 3:
		return "rd"
	}
	return "th"
}

func num(v float64) string { return fmt.Sprintf("%.4g", v) }

// Page is the report: the score table, the default model's forecast and bound
// against actuals for the sample VMs, and its calibration curve.
func (r *Result) Page() report.Page {
	p := report.Page{
		Title: "Forecast backtest: " + r.Workload,
		Intro: fmt.Sprintf("Walk-forward backtest of %d VMs, %d steps of %gs ahead, first forecast after %d samples. "+
			"Coverage is the fraction of actuals at or below the upper bound stated at %g, over every horizon step.",
			r.VMs, r.Horizon, r.Step, r.Warmup, r.Confidence),
	}
	p.Sections = append(p.Sections, report.Section{Heading: "Scores", Tables: []report.Table{r.Table()}})

	cal := report.Chart{Title: "Calibration of the default model", XLabel: "stated confidence", YLabel: "measured coverage", Diagonal: true}
	byRes := map[string]*report.Line{}
	var order []string
	for _, c := range r.Calibration {
		l := byRes[c.Resource]
		if l == nil {
			l = &report.Line{Name: c.Resource}
			byRes[c.Resource] = l
			order = append(order, c.Resource)
		}
		l.X = append(l.X, c.Stated)
		l.Y = append(l.Y, c.Measured)
	}
	for _, k := range order {
		cal.Points = append(cal.Points, *byRes[k])
	}
	var rows [][]string
	for _, c := range r.Calibration {
		rows = append(rows, []string{c.Resource, fmt.Sprintf("%g", c.Stated), fmt.Sprintf("%.3f", c.Measured)})
	}
	p.Sections = append(p.Sections, report.Section{
		Heading: "Calibration",
		Text:    "Each point is one stated confidence of the default model's upper bound against the coverage measured over all VMs, origins and steps. On the diagonal is calibrated.",
		Tables:  []report.Table{{Caption: "stated vs measured coverage", Header: []string{"resource", "stated", "measured"}, Rows: rows}},
		Charts:  []report.Chart{cal},
	})

	var charts []report.Chart
	for _, t := range r.Traces {
		charts = append(charts, report.Chart{
			Title:  fmt.Sprintf("%s %s, %d steps ahead", t.VM, t.Resource, r.Horizon),
			XLabel: "sample", YLabel: t.Resource,
			Lines: []report.Line{{Name: "actual", X: t.Index, Y: t.Actual}, {Name: "forecast", X: t.Index, Y: t.Point}},
			Bands: []report.Band{{Name: fmt.Sprintf("forecast to %g bound", r.Confidence), X: t.Index, Lo: t.Point, Hi: t.Upper}},
		})
	}
	if len(charts) > 0 {
		p.Sections = append(p.Sections, report.Section{
			Heading: "Sample VMs",
			Text:    "The default model's forecast for the last horizon step and its upper bound, against what happened. VMs are picked across the busier half by mean CPU.",
			Charts:  charts,
		})
	}
	return p
}

// Text renders the score table for a terminal.
func (r *Result) Text() string {
	var b strings.Builder
	t := r.Table()
	fmt.Fprintf(&b, "%s\n", t.Caption)
	fmt.Fprintf(&b, "%-12s %-5s %12s %8s %12s %12s %8s %10s\n", "model", "res", "MAE", "/mean12", "RMSE", "pinball", "coverage", "n")
	for _, row := range t.Rows {
		fmt.Fprintf(&b, "%-12s %-5s %12s %8s %12s %12s %8s %10s\n", row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])
	}
	fmt.Fprintf(&b, "\nMAE / mean12's by horizon step:\n")
	for _, sc := range r.Models {
		base := r.find("mean12", sc.Resource)
		if sc.Name == "mean12" || base == nil {
			continue
		}
		fmt.Fprintf(&b, "%-12s %-5s", sc.Name, sc.Resource)
		for k, e := range sc.MAEByStep {
			fmt.Fprintf(&b, " %6.3f", e/base.MAEByStep[k])
		}
		fmt.Fprintln(&b)
	}
	fmt.Fprintf(&b, "\ncalibration of default (stated -> measured):\n")
	for _, c := range r.Calibration {
		fmt.Fprintf(&b, "  %-5s %.2f -> %.3f\n", c.Resource, c.Stated, c.Measured)
	}
	if len(r.References) > 0 {
		fmt.Fprintf(&b, "\nreferences that look ahead or choose with hindsight (not forecasters):\n")
		fmt.Fprintf(&b, "%-24s %-5s %12s %8s %10s\n", "reference", "res", "MAE", "/mean12", "n")
		for _, x := range r.References {
			fmt.Fprintf(&b, "%-24s %-5s %12.4g %8.3f %10d\n", x.Name, x.Resource, x.MAE, x.Ratio, x.N)
		}
	}
	return b.String()
}

func (r *Result) find(name, res string) *Score {
	for i := range r.Models {
		if r.Models[i].Name == name && r.Models[i].Resource == res {
			return &r.Models[i]
		}
	}
	return nil
}
