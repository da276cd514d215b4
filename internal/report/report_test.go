package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var policies = []string{"first-fit", "best-fit", "thr-mmt-0.8", "thr-mmt-0.9", "lr-mmt", "forecast-p95"}

// series makes a deterministic, wiggly day of n samples for policy k.
func series(k, n int) Line {
	l := Line{Name: policies[k%len(policies)], X: make([]float64, n), Y: make([]float64, n)}
	for i := range n {
		t := float64(i) / float64(n)
		l.X[i] = float64(i) * 5 / 60 // hours
		l.Y[i] = 40 + 8*float64(k) + 15*math.Sin(2*math.Pi*t) + 3*math.Sin(float64(i*(k+3))/7)
	}
	return l
}

// samplePage has a table and one chart of each kind; every line chart has
// six policies of n points.
func samplePage(n int) Page {
	var lines []Line
	for k := range policies {
		lines = append(lines, series(k, n))
	}
	// A monitoring gap: must be skipped, not fatal.
	lines[2].Y[n/3] = math.NaN()

	fc := series(0, n)
	fc.Name = "forecast"
	band := Band{Name: "forecast", X: fc.X, Lo: make([]float64, n), Hi: make([]float64, n)}
	for i, y := range fc.Y {
		band.Lo[i], band.Hi[i] = y-6-float64(i%5), y+6+float64(i%7)
	}
	actual := series(1, n)
	actual.Name = "actual"

	var calib []Line
	for k := range 3 {
		l := Line{Name: policies[k]}
		for _, q := range []float64{0.5, 0.8, 0.9, 0.95, 0.99} {
			l.X = append(l.X, q)
			l.Y = append(l.Y, q-0.02*float64(k+1)*(1-q)*10)
		}
		calib = append(calib, l)
	}

	var counts []Line
	for k := range 3 {
		l := Line{Name: policies[k]}
		for h := range 24 {
			l.X = append(l.X, float64(h))
			l.Y = append(l.Y, float64((h*(k+2))%7))
		}
		counts = append(counts, l)
	}

	rows := [][]string{}
	for k, p := range policies {
		rows = append(rows, []string{p, fmt.Sprintf("%.1f", 30+float64(k)*2.5), fmt.Sprintf("%d", 120-k*7), fmt.Sprintf("%.2f%%", 0.5*float64(k))})
	}

	return Page{
		Title: "Policy comparison <sim-42>",
		Intro: "Six placement policies replayed against the same one-day trace.\n\nLower energy and fewer SLA violations are better.",
		Sections: []Section{
			{
				Heading: "Summary",
				Text:    "Best values per column are highlighted.",
				Tables: []Table{{
					Caption: "Totals per policy",
					Header:  []string{"Policy", "Energy (kWh)", "Migrations", "SLA violation"},
					Rows:    rows,
					Best:    []Goal{NoGoal, LowerIsBetter, LowerIsBetter, LowerIsBetter},
				}},
			},
			{
				Heading: "Over time",
				Charts: []Chart{
					{Title: "Active hosts", XLabel: "time (h)", YLabel: "hosts", Lines: lines},
					{Title: "Migrations per hour", XLabel: "hour", YLabel: "migrations", Lines: counts, Kind: KindBar},
				},
			},
			{
				Heading: "Forecast",
				Charts: []Chart{
					{Title: "CPU demand forecast", XLabel: "time (h)", YLabel: "cores", Lines: []Line{fc, actual}, Bands: []Band{band}},
					{Title: "Calibration", XLabel: "stated quantile", YLabel: "measured coverage", Points: calib, Diagonal: true},
				},
			},
		},
	}
}

// parseXML fails the test unless b is well-formed XML.
func parseXML(t testing.TB, name string, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", name, err)
		}
	}
}

func TestWriteAllKinds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "report")
	p := samplePage(288)
	index, err := Write(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	if index != filepath.Join(dir, "index.html") {
		t.Errorf("index path = %q", index)
	}
	html, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	page := string(html)

	n := 0
	for _, s := range p.Sections {
		for _, c := range s.Charts {
			n++
			file := fmt.Sprintf("chart-%02d.svg", n)
			svg, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			parseXML(t, file, svg)
			var names []string
			for _, l := range c.Lines {
				names = append(names, l.Name)
			}
			for _, l := range c.Points {
				names = append(names, l.Name)
			}
			for _, b := range c.Bands {
				names = append(names, b.Name)
			}
			if c.Diagonal {
				names = append(names, "y = x")
			}
			for _, want := range append(names, c.Title, c.XLabel, c.YLabel) {
				if !bytes.Contains(svg, []byte(">"+want+"<")) {
					t.Errorf("%s (%s): no text %q", file, c.Title, want)
				}
			}
			if bytes.Contains(svg, []byte("NaN")) {
				t.Errorf("%s contains NaN", file)
			}
			if !strings.Contains(page, `href="`+file+`"`) {
				t.Errorf("index.html does not link %s", file)
			}
		}
	}
	if n != 4 {
		t.Fatalf("sample has %d charts", n)
	}

	// The inlined charts must be well-formed too, and there is one each.
	inline := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(page, -1)
	if len(inline) != n {
		t.Fatalf("index.html inlines %d SVGs, want %d", len(inline), n)
	}
	for i, s := range inline {
		parseXML(t, fmt.Sprintf("inline svg %d", i+1), []byte(s))
	}
	if strings.Contains(page, "<?xml") {
		t.Error("index.html contains an XML prolog")
	}

	for _, want := range []string{
		"<title>Policy comparison &lt;sim-42&gt;</title>",
		"<caption>Totals per policy</caption>",
		`<th class="num">Energy (kWh)</th>`,
		"<th>Policy</th>",
		`<td class="num best">30.0</td>`, // lowest energy
		`<td class="num best">0.00%</td>`,
		`<td class="num">37.5</td>`,
		"<p>Lower energy and fewer SLA violations are better.</p>",
		`<a href="#s3">Forecast</a>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

func TestErrorsNameTheBadInput(t *testing.T) {
	good := series(2, 288)
	short := good
	short.Y = short.Y[:287]
	for _, tc := range []struct {
		name string
		page Page
		want string
	}{
		{"line", Page{Sections: []Section{{Charts: []Chart{{Title: "Active hosts", Lines: []Line{series(0, 288), short}}}}}},
			`chart "Active hosts": line "thr-mmt-0.8" has 288 X values but 287 Y values`},
		{"points", Page{Sections: []Section{{Charts: []Chart{{Title: "Calibration", Points: []Line{{Name: "p", X: []float64{1}}}}}}}},
			`chart "Calibration": points "p" has 1 X values but 0 Y values`},
		{"band", Page{Sections: []Section{{Charts: []Chart{{Title: "Fc", Bands: []Band{{Name: "p10-p90", X: []float64{1, 2}, Lo: []float64{1, 2}, Hi: []float64{1}}}}}}}},
			`chart "Fc": band "p10-p90" has 2 X values but 2 Lo and 1 Hi values`},
		{"untitled chart", Page{Sections: []Section{{Charts: []Chart{{Title: "ok"}, {Lines: []Line{short}}}}}},
			`chart #2: line "thr-mmt-0.8"`},
		{"kind", Page{Sections: []Section{{Charts: []Chart{{Title: "Pie", Kind: "pie"}}}}},
			`chart "Pie": kind "pie"`},
		{"table row", Page{Sections: []Section{{Tables: []Table{{Caption: "Totals", Header: []string{"a", "b"}, Rows: [][]string{{"1", "2"}, {"1", "2", "3"}}}}}}},
			`table "Totals": row 2 has 3 cells but the header has 2`},
		{"table best", Page{Sections: []Section{{Heading: "S", Tables: []Table{{Header: []string{"a"}, Best: []Goal{LowerIsBetter, LowerIsBetter}}}}}},
			`table #1 in section "S": Best has 2 entries but the table has 1 columns`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			_, err := Write(dir, tc.page)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
				t.Errorf("a bad page still created %s", dir)
			}
		})
	}
}

func TestNonFiniteValuesAreSkipped(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	c := Chart{
		Title: "gappy",
		Lines: []Line{
			{Name: "gap", X: []float64{0, 1, 2, 3, 4, 5}, Y: []float64{1, 2, nan, 3, 4, 5}},
			{Name: "lone", X: []float64{0, 1, 2}, Y: []float64{nan, 7, inf}},
			{Name: "empty"},
			{Name: "all-nan", X: []float64{nan, nan}, Y: []float64{1, 2}},
		},
		Bands:  []Band{{Name: "gap", X: []float64{0, 1, 2, 3}, Lo: []float64{0, nan, 0, 0}, Hi: []float64{2, 2, 2, 2}}},
		Points: []Line{{Name: "pts", X: []float64{1, nan}, Y: []float64{1, 1}}},
	}
	for _, kind := range []string{KindLine, KindBar} {
		c.Kind = kind
		dir := t.TempDir()
		if _, err := Write(dir, Page{Title: "t", Sections: []Section{{Charts: []Chart{c}}}}); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		svg, err := os.ReadFile(filepath.Join(dir, "chart-01.svg"))
		if err != nil {
			t.Fatal(err)
		}
		parseXML(t, kind, svg)
		if bytes.Contains(svg, []byte("NaN")) || bytes.Contains(svg, []byte("Inf")) {
			t.Errorf("%s: SVG contains a non-finite number", kind)
		}
	}

	segs := segments([]float64{0, 1, 2, 3, 4, 5}, []float64{1, 2, nan, 3, 4, 5})
	if len(segs) != 2 || len(segs[0]) != 2 || len(segs[1]) != 3 {
		t.Errorf("segments = %v, want the line broken at the NaN", segs)
	}
	rings := bandRings(c.Bands[0])
	if len(rings) != 2 || len(rings[0]) != 2 || len(rings[1]) != 4 {
		t.Errorf("bandRings = %v", rings)
	}
}

func TestTitlesAreEscaped(t *testing.T) {
	evil := `<script>alert("x")</script>&`
	dir := t.TempDir()
	p := Page{Title: evil, Intro: evil, Sections: []Section{{
		Heading: evil, Text: evil,
		Tables: []Table{{Caption: evil, Header: []string{evil}, Rows: [][]string{{evil}}}},
		Charts: []Chart{{Title: evil, XLabel: evil, Lines: []Line{{Name: evil, X: []float64{0, 1}, Y: []float64{0, 1}}}}},
	}}}
	index, err := Write(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(index)
	if bytes.Contains(html, []byte("<script>")) {
		t.Error("index.html contains an unescaped <script>")
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "chart-01.svg"))
	parseXML(t, "chart-01.svg", svg)
}

func TestSeriesKeepTheirColourAcrossCharts(t *testing.T) {
	a := Line{Name: "a", X: []float64{0, 1}, Y: []float64{0, 1}}
	b := Line{Name: "b", X: []float64{0, 1}, Y: []float64{1, 0}}
	dir := t.TempDir()
	_, err := Write(dir, Page{Sections: []Section{{Charts: []Chart{
		{Title: "one", Lines: []Line{a, b}},
		{Title: "two", Lines: []Line{b}},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	orange := "stroke:#F28E2B" // the palette's second colour, b's in chart one
	for _, f := range []string{"chart-01.svg", "chart-02.svg"} {
		svg, _ := os.ReadFile(filepath.Join(dir, f))
		if !bytes.Contains(svg, []byte(orange)) {
			t.Errorf("%s: series b is not drawn in %s", f, orange)
		}
	}
}

func TestTableView(t *testing.T) {
	tv := tableToView(Table{
		Header:  []string{"name", "x", "y", "z"},
		Rows:    [][]string{{"a", "1,200", "5%", "n/a"}, {"b", "-3.5", "—", "2"}, {"c", "7"}},
		Best:    []Goal{NoGoal, HigherIsBetter, LowerIsBetter},
		Numeric: nil,
	})
	got := func(r, c int) string { return tv.Rows[r][c].Classes }
	for _, tc := range []struct {
		r, c int
		want string
	}{
		{0, 0, ""}, {0, 1, "num best"}, {1, 1, "num"}, {0, 2, "num best"}, {1, 2, "num"},
		{0, 3, ""}, {1, 3, ""}, // "n/a" makes z a text column
		{2, 3, ""}, // short rows are padded
	} {
		if g := got(tc.r, tc.c); g != tc.want {
			t.Errorf("row %d col %d classes = %q, want %q", tc.r, tc.c, g, tc.want)
		}
	}
	if len(tv.Rows[2]) != 4 {
		t.Errorf("short row has %d cells", len(tv.Rows[2]))
	}
}

func TestDecimateKeepsTheShape(t *testing.T) {
	l := series(3, 8000)
	l.Y[4321] = 1e3 // a spike must survive
	l.Y[17] = -1e3
	seg := segments(l.X, l.Y)[0]
	x0, x1 := xExtent([]Line{l})
	d := decimate(seg, x0, (x1-x0)/decimBuckets)
	if len(d) > 4*decimBuckets+4 || len(d) < decimBuckets {
		t.Fatalf("decimated to %d points", len(d))
	}
	if d[0] != seg[0] || d[len(d)-1] != seg[len(seg)-1] {
		t.Error("end points lost")
	}
	var lo, hi float64
	for i, p := range d {
		lo, hi = math.Min(lo, p.Y), math.Max(hi, p.Y)
		if i > 0 && p.X < d[i-1].X {
			t.Fatal("order lost")
		}
	}
	if lo != -1e3 || hi != 1e3 {
		t.Errorf("extremes lost: %v..%v", lo, hi)
	}
	// Unsorted x is left alone rather than mangled.
	seg[10], seg[11] = seg[11], seg[10]
	if got := decimate(seg, x0, (x1-x0)/decimBuckets); len(got) != len(seg) {
		t.Error("unsorted series was decimated")
	}
}

// benchPage is six line charts of six policies × n points, the simulator's
// shape of report.
func benchPage(n int) Page {
	var lines []Line
	for k := range policies {
		lines = append(lines, series(k, n))
	}
	var charts []Chart
	for i := range 6 {
		charts = append(charts, Chart{Title: fmt.Sprintf("Metric %d", i+1), XLabel: "time (h)", YLabel: "value", Lines: lines})
	}
	return Page{Title: "bench", Sections: []Section{{Heading: "Charts", Charts: charts}}}
}

func benchmarkWrite(b *testing.B, n int) {
	p := benchPage(n)
	dir := b.TempDir()
	var size int64
	for b.Loop() {
		index, err := Write(dir, p)
		if err != nil {
			b.Fatal(err)
		}
		if fi, err := os.Stat(index); err == nil {
			size = fi.Size()
		}
	}
	b.ReportMetric(float64(size)/1e6, "MB-html")
}

func BenchmarkWrite6x6x288(b *testing.B)  { benchmarkWrite(b, 288) }
func BenchmarkWrite6x6x8000(b *testing.B) { benchmarkWrite(b, 8000) }
