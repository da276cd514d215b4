// Package report writes a self-contained static HTML report: prose, tables
// and charts rendered with gonum/plot. It is deliberately generic (it knows
// nothing about policies, hosts or forecasts) so that both the simulator and
// the forecast backtester can describe their results with the same types.
package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Page is one report: a title, an introductory paragraph and sections.
type Page struct {
	Title    string
	Intro    string // plain text; blank lines separate paragraphs
	Sections []Section
}

// Section groups prose, tables and charts under a heading. Within a section
// the text comes first, then the tables, then the charts.
type Section struct {
	Heading string
	Text    string // plain text; blank lines separate paragraphs
	Tables  []Table
	Charts  []Chart
}

// Goal says which value of a table column is the best one.
type Goal int8

const (
	NoGoal         Goal = iota // no highlight
	LowerIsBetter              // highlight the smallest number
	HigherIsBetter             // highlight the largest number
)

// Table is a plain table with a header row.
type Table struct {
	Caption string
	Header  []string
	Rows    [][]string // rows shorter than the header are padded with empty cells

	// Numeric marks right-aligned columns. When nil, a column is numeric if
	// every non-empty body cell parses as a number (a trailing % is allowed).
	Numeric []bool
	// Best highlights, per column, the best numeric cell (ties all win).
	// Columns beyond len(Best) get no highlight.
	Best []Goal
}

// Chart kinds.
const (
	KindLine = "line" // Lines are drawn as polylines (the default)
	KindBar  = "bar"  // Lines are drawn as grouped bars, e.g. per-interval counts
)

// Chart is one plot. Series are coloured by name, consistently across the
// whole page, so the same policy has the same colour in every chart; a Band
// or Points series named like a Line shares its colour and legend entry.
// Non-finite values (NaN, ±Inf) are skipped: a line is broken at the gap.
type Chart struct {
	Title, XLabel, YLabel string

	Lines    []Line // one per series; drawn as bars when Kind is KindBar
	Bands    []Band // shaded area between Lo and Hi, drawn beneath the lines
	Points   []Line // scatter series, e.g. calibration: stated vs measured
	Diagonal bool   // draw y = x and give both axes the same range
	Kind     string // KindLine (also "") or KindBar
}

// Line is a named series of (X[i], Y[i]) points.
type Line struct {
	Name string
	X, Y []float64
}

// Band is a named shaded area between Lo[i] and Hi[i] at X[i].
type Band struct {
	Name      string
	X, Lo, Hi []float64
}

// IndexFile is the name of the HTML page that Write creates.
const IndexFile = "index.html"

// Write renders p into dir (created if needed) and returns the path of its
// index.html.
//
// The charts are inlined into index.html, so that one file is the whole
// report and can be mailed or attached to a ticket as is; each chart is also
// written as chart-NN.svg for reuse in slides or docs. The input is checked
// completely before anything is written, so a bad page leaves no half
// report behind.
func Write(dir string, p Page) (indexPath string, err error) {
	if err := validate(p); err != nil {
		return "", err
	}
	charts := render(p)
	for _, c := range charts {
		if c.err != nil {
			return "", c.err
		}
	}
	html, err := renderHTML(p, charts)
	if err != nil {
		return "", err
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	for _, c := range charts {
		if err := os.WriteFile(filepath.Join(dir, c.file), c.svg, 0o644); err != nil {
			return "", fmt.Errorf("report: %w", err)
		}
	}
	indexPath = filepath.Join(dir, IndexFile)
	if err := writeAtomic(indexPath, html); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	return indexPath, nil
}

// writeAtomic replaces path via a rename so that a browser reloading the
// report never sees a half-written page.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".index-*.html")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
	}
	return werr
}

// renderedChart is one chart's SVG and where it goes.
type renderedChart struct {
	section, index int // position in the page
	file           string
	svg            []byte
	err            error
}

// render draws every chart. Charts are independent, so they are drawn in
// parallel; colours are assigned beforehand, in page order, so the result
// does not depend on scheduling.
func render(p Page) []renderedChart {
	pal := newPalette()
	var jobs []renderedChart
	var specs []Chart
	for si, s := range p.Sections {
		for ci, c := range s.Charts {
			pal.assign(c, len(specs))
			specs = append(specs, c)
			jobs = append(jobs, renderedChart{
				section: si, index: ci,
				file: fmt.Sprintf("chart-%02d.svg", len(jobs)+1),
			})
		}
	}

	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var buf bytes.Buffer
			if err := renderChart(&buf, specs[i], i, pal); err != nil {
				jobs[i].err = fmt.Errorf("report: %s: %w", chartName(specs[i], i), err)
				return
			}
			jobs[i].svg = buf.Bytes()
		}()
	}
	wg.Wait()
	return jobs
}

// chartName identifies a chart in errors: by title, or by its position
// (1-based, page-wide) when it has none.
func chartName(c Chart, i int) string {
	if c.Title != "" {
		return fmt.Sprintf("chart %q", c.Title)
	}
	return fmt.Sprintf("chart #%d", i+1)
}

func tableName(t Table, section string, i int) string {
	if t.Caption != "" {
		return fmt.Sprintf("table %q", t.Caption)
	}
	return fmt.Sprintf("table #%d in section %q", i+1, section)
}

// validate checks the whole page and names the first bad input.
func validate(p Page) error {
	n := 0
	for _, s := range p.Sections {
		for ti, t := range s.Tables {
			if err := validateTable(t); err != nil {
				return fmt.Errorf("report: %s: %w", tableName(t, s.Heading, ti), err)
			}
		}
		for _, c := range s.Charts {
			if err := validateChart(c); err != nil {
				return fmt.Errorf("report: %s: %w", chartName(c, n), err)
			}
			n++
		}
	}
	return nil
}

func validateTable(t Table) error {
	cols := len(t.Header)
	for i, r := range t.Rows {
		if len(t.Header) > 0 && len(r) > cols {
			return fmt.Errorf("row %d has %d cells but the header has %d", i+1, len(r), cols)
		}
	}
	cols = columns(t)
	if len(t.Numeric) > cols {
		return fmt.Errorf("Numeric has %d entries but the table has %d columns", len(t.Numeric), cols)
	}
	if len(t.Best) > cols {
		return fmt.Errorf("Best has %d entries but the table has %d columns", len(t.Best), cols)
	}
	for i, g := range t.Best {
		if g < NoGoal || g > HigherIsBetter {
			return fmt.Errorf("Best[%d] is %d, not a Goal", i, g)
		}
	}
	return nil
}

func validateChart(c Chart) error {
	switch c.Kind {
	case "", KindLine, KindBar:
	default:
		return fmt.Errorf("kind %q is neither %q nor %q", c.Kind, KindLine, KindBar)
	}
	for _, l := range c.Lines {
		if len(l.X) != len(l.Y) {
			return fmt.Errorf("line %q has %d X values but %d Y values", l.Name, len(l.X), len(l.Y))
		}
	}
	for _, l := range c.Points {
		if len(l.X) != len(l.Y) {
			return fmt.Errorf("points %q has %d X values but %d Y values", l.Name, len(l.X), len(l.Y))
		}
	}
	for _, b := range c.Bands {
		if len(b.X) != len(b.Lo) || len(b.X) != len(b.Hi) {
			return fmt.Errorf("band %q has %d X values but %d Lo and %d Hi values",
				b.Name, len(b.X), len(b.Lo), len(b.Hi))
		}
	}
	return nil
}

// paragraphs splits plain text on blank lines.
func paragraphs(s string) []string {
	var out []string
	for _, p := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
