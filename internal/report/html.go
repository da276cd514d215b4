package report

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// View models: what the template sees, already laid out.
type pageView struct {
	Title    string
	Intro    []string
	Sections []sectionView
}

type sectionView struct {
	ID      string
	Heading string
	Text    []string
	Tables  []tableView
	Charts  []chartView
}

type tableView struct {
	Caption string
	Header  []cellView
	Rows    [][]cellView
}

type cellView struct {
	Text    string
	Classes string
}

type chartView struct {
	Title string
	File  string
	SVG   template.HTML
}

func renderHTML(p Page, charts []renderedChart) ([]byte, error) {
	v := pageView{Title: p.Title, Intro: paragraphs(p.Intro)}
	for si, s := range p.Sections {
		sv := sectionView{ID: fmt.Sprintf("s%d", si+1), Heading: s.Heading, Text: paragraphs(s.Text)}
		for _, t := range s.Tables {
			sv.Tables = append(sv.Tables, tableToView(t))
		}
		v.Sections = append(v.Sections, sv)
	}
	for _, c := range charts {
		spec := p.Sections[c.section].Charts[c.index]
		v.Sections[c.section].Charts = append(v.Sections[c.section].Charts, chartView{
			Title: spec.Title,
			File:  c.file,
			// Trusted: produced by vgsvg, which escapes all text it draws.
			SVG: template.HTML(inlineSVG(c.svg)),
		})
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return buf.Bytes(), nil
}

// inlineSVG drops the XML prolog and generator comment, which are not
// allowed inside an HTML document.
func inlineSVG(svg []byte) []byte {
	if i := bytes.Index(svg, []byte("<svg")); i >= 0 {
		svg = svg[i:]
	}
	return svg
}

func columns(t Table) int {
	n := len(t.Header)
	for _, r := range t.Rows {
		n = max(n, len(r))
	}
	return n
}

// parseNumber reads a table cell as a number, allowing surrounding spaces,
// a trailing % and thousands separators. ok is false for anything else,
// including NaN and ±Inf.
func parseNumber(s string) (v float64, ok bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, "%")
	s = strings.ReplaceAll(strings.TrimSpace(s), ",", "")
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

func tableToView(t Table) tableView {
	cols := columns(t)
	cell := func(r []string, c int) string {
		if c < len(r) {
			return r[c]
		}
		return ""
	}

	numeric := make([]bool, cols)
	if t.Numeric != nil {
		copy(numeric, t.Numeric)
	} else {
		for c := range cols {
			seen, all := false, true
			for _, r := range t.Rows {
				s := strings.TrimSpace(cell(r, c))
				if s == "" || s == "-" || s == "—" {
					continue // missing values do not make a column text
				}
				seen = true
				if _, ok := parseNumber(s); !ok {
					all = false
					break
				}
			}
			numeric[c] = seen && all
		}
	}

	// best[c] is the winning value of column c, if it has a goal.
	best := make([]float64, cols)
	hasBest := make([]bool, cols)
	for c, g := range t.Best {
		if g == NoGoal {
			continue
		}
		for _, r := range t.Rows {
			v, ok := parseNumber(cell(r, c))
			if !ok {
				continue
			}
			if !hasBest[c] || (g == LowerIsBetter && v < best[c]) || (g == HigherIsBetter && v > best[c]) {
				best[c], hasBest[c] = v, true
			}
		}
	}

	tv := tableView{Caption: t.Caption}
	for c := range cols {
		tv.Header = append(tv.Header, cellView{Text: cell(t.Header, c), Classes: classes(numeric[c], false)})
	}
	for _, r := range t.Rows {
		row := make([]cellView, cols)
		for c := range cols {
			s := cell(r, c)
			v, ok := parseNumber(s)
			row[c] = cellView{Text: s, Classes: classes(numeric[c], hasBest[c] && ok && v == best[c])}
		}
		tv.Rows = append(tv.Rows, row)
	}
	if len(t.Header) == 0 {
		tv.Header = nil
	}
	return tv
}

func classes(num, best bool) string {
	switch {
	case num && best:
		return "num best"
	case num:
		return "num"
	case best:
		return "best"
	}
	return ""
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Liberation Sans", Arial, sans-serif; color: #1f2328; background: #fff; margin: 0; }
main { max-width: 920px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
p { margin: 8px 0; max-width: 75ch; }
nav ol { margin: 8px 0 0; padding-left: 22px; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 16px 0; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding-bottom: 6px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #d8dee4; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; border-bottom: 2px solid #d0d7de; font-weight: 600; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; background: #dafbe1; }
.scroll { overflow-x: auto; }
figure { margin: 20px 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { font-size: 12px; color: #656d76; text-align: right; }
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
{{range .Intro}}<p>{{.}}</p>
{{end}}
{{- if gt (len .Sections) 1}}<nav><ol>
{{range .Sections}}<li><a href="#{{.ID}}">{{.Heading}}</a></li>
{{end}}</ol></nav>
{{end}}
{{- range .Sections}}
<section id="{{.ID}}">
<h2>{{.Heading}}</h2>
{{range .Text}}<p>{{.}}</p>
{{end}}
{{- range .Tables}}<div class="scroll"><table>
{{if .Caption}}<caption>{{.Caption}}</caption>
{{end}}
{{- if .Header}}<thead><tr>{{range .Header}}<th{{if .Classes}} class="{{.Classes}}"{{end}}>{{.Text}}</th>{{end}}</tr></thead>
{{end -}}
<tbody>
{{range .Rows}}<tr>{{range .}}<td{{if .Classes}} class="{{.Classes}}"{{end}}>{{.Text}}</td>{{end}}</tr>
{{end}}</tbody>
</table></div>
{{end}}
{{- range .Charts}}<figure aria-label="{{.Title}}">
{{.SVG}}
<figcaption><a href="{{.File}}">{{.File}}</a></figcaption>
</figure>
{{end}}
</section>
{{- end}}
</main>
</body>
</html>
`))
