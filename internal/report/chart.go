package report

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

const (
	// 9×4 in is 864×384 CSS px: wide enough for a day of 5-minute samples
	// and fits the page column without scaling text below legibility.
	chartWidth  = 9 * vg.Inch
	chartHeight = 4 * vg.Inch
	margin      = 6 * vg.Millimeter / 2

	// Lines longer than maxLinePoints are reduced to at most 4 points per
	// bucket (first, min, max, last). With decimBuckets columns across the
	// x range that is finer than the rendered resolution, so the picture is
	// unchanged while the SVG stays small and quick for the browser.
	decimBuckets  = 800
	maxLinePoints = 4 * decimBuckets
)

// The Tableau 10 palette: distinct hues that stay tellable apart for most
// colour-blind readers. Beyond ten series the colours repeat with dashes.
var tableau10 = []color.RGBA{
	{0x4e, 0x79, 0xa7, 0xff}, // blue
	{0xf2, 0x8e, 0x2b, 0xff}, // orange
	{0xe1, 0x57, 0x59, 0xff}, // red
	{0x76, 0xb7, 0xb2, 0xff}, // teal
	{0x59, 0xa1, 0x4f, 0xff}, // green
	{0xed, 0xc9, 0x48, 0xff}, // yellow
	{0xb0, 0x7a, 0xa1, 0xff}, // purple
	{0xff, 0x9d, 0xa7, 0xff}, // pink
	{0x9c, 0x75, 0x5f, 0xff}, // brown
	{0xba, 0xb0, 0xac, 0xff}, // grey
}

var dashCycle = [][]vg.Length{
	nil,
	{vg.Points(6), vg.Points(3)},
	{vg.Points(2), vg.Points(2)},
	{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)},
}

var glyphCycle = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{},
	draw.CrossGlyph{}, draw.RingGlyph{}, draw.PlusGlyph{},
	draw.BoxGlyph{}, draw.PyramidGlyph{},
}

var (
	sansFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	boldFont = font.Font{Typeface: "Liberation", Variant: "Sans", Weight: xfont.WeightBold}
	gridGrey = color.RGBA{0xe3, 0xe3, 0xe3, 0xff}
	diagGrey = color.RGBA{0x80, 0x80, 0x80, 0xff}
)

// palette maps series keys to a page-wide index. It is filled before the
// charts are rendered in parallel and only read afterwards.
type palette struct{ index map[string]int }

func newPalette() *palette { return &palette{index: map[string]int{}} }

func (p *palette) add(key string) {
	if _, ok := p.index[key]; !ok {
		p.index[key] = len(p.index)
	}
}

func (p *palette) assign(c Chart, chart int) {
	for i, l := range c.Lines {
		p.add(seriesKey(l.Name, chart, "line", i))
	}
	for i, b := range c.Bands {
		p.add(seriesKey(b.Name, chart, "band", i))
	}
	for i, l := range c.Points {
		p.add(seriesKey(l.Name, chart, "points", i))
	}
}

func (p *palette) colour(key string) color.RGBA {
	return tableau10[p.index[key]%len(tableau10)]
}

func (p *palette) dashes(key string) []vg.Length {
	return dashCycle[(p.index[key]/len(tableau10))%len(dashCycle)]
}

func (p *palette) glyph(key string) draw.GlyphDrawer {
	return glyphCycle[p.index[key]%len(glyphCycle)]
}

// seriesKey colours named series by name; unnamed ones get a colour of
// their own.
func seriesKey(name string, chart int, kind string, i int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("\x00%d/%s/%d", chart, kind, i)
}

// legend collects entries in first-appearance order, merging the thumbnails
// of series that share a name (a forecast line and its band).
type legend struct {
	names  []string
	thumbs map[string][]plot.Thumbnailer
}

func (l *legend) add(name string, t plot.Thumbnailer) {
	if name == "" {
		return
	}
	if l.thumbs == nil {
		l.thumbs = map[string][]plot.Thumbnailer{}
	}
	if _, ok := l.thumbs[name]; !ok {
		l.names = append(l.names, name)
	}
	l.thumbs[name] = append(l.thumbs[name], t)
}

func renderChart(w io.Writer, c Chart, chart int, pal *palette) error {
	p := plot.New()
	styleText(p)
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	grid := plotter.NewGrid()
	grid.Vertical.Color, grid.Horizontal.Color = gridGrey, gridGrey
	grid.Vertical.Width, grid.Horizontal.Width = vg.Points(0.5), vg.Points(0.5)
	p.Add(grid)

	var leg legend
	// Bands first so that lines and points are drawn on top of them.
	for i, b := range c.Bands {
		key := seriesKey(b.Name, chart, "band", i)
		base := pal.colour(key)
		// NRGBA, not RGBA: color.RGBA is alpha-premultiplied.
		fill := color.NRGBA{R: base.R, G: base.G, B: base.B, A: 0x40}
		poly := &plotter.Polygon{XYs: bandRings(b), Color: fill}
		poly.LineStyle = draw.LineStyle{Color: fill, Width: 0}
		if len(poly.XYs) > 0 {
			p.Add(poly)
		}
		leg.add(b.Name, poly)
	}

	if c.Kind == KindBar {
		addBars(p, &leg, c, chart, pal)
	} else {
		x0, x1 := xExtent(c.Lines)
		bw := (x1 - x0) / decimBuckets
		for i, l := range c.Lines {
			key := seriesKey(l.Name, chart, "line", i)
			ls := draw.LineStyle{Color: pal.colour(key), Width: vg.Points(1.5), Dashes: pal.dashes(key)}
			for _, seg := range segments(l.X, l.Y) {
				if len(seg) == 1 {
					// A lone sample between gaps would be an invisible
					// zero-length line; show it as a dot.
					p.Add(&plotter.Scatter{XYs: seg, GlyphStyle: draw.GlyphStyle{
						Color: ls.Color, Radius: vg.Points(1.5), Shape: draw.CircleGlyph{}}})
					continue
				}
				p.Add(&plotter.Line{XYs: decimate(seg, x0, bw), LineStyle: ls})
			}
			leg.add(l.Name, &plotter.Line{LineStyle: ls})
		}
	}

	for i, l := range c.Points {
		key := seriesKey(l.Name, chart, "points", i)
		sc := &plotter.Scatter{GlyphStyle: draw.GlyphStyle{
			Color: pal.colour(key), Radius: vg.Points(3), Shape: pal.glyph(key)}}
		for _, seg := range segments(l.X, l.Y) {
			sc.XYs = append(sc.XYs, seg...)
		}
		if len(sc.XYs) > 0 {
			p.Add(sc)
		}
		leg.add(l.Name, sc)
	}

	if c.Diagonal {
		// Calibration plots compare like with like: same range on both axes.
		lo, hi := math.Min(p.X.Min, p.Y.Min), math.Max(p.X.Max, p.Y.Max)
		if math.IsInf(lo, 0) || math.IsInf(hi, 0) {
			lo, hi = 0, 1
		}
		diag := &plotter.Line{
			XYs:       plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}},
			LineStyle: draw.LineStyle{Color: diagGrey, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}},
		}
		p.Add(diag)
		leg.add("y = x", diag)
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = lo, hi, lo, hi
	}

	cnv := vgsvg.New(chartWidth, chartHeight)
	dc := draw.New(cnv)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	dc = draw.Crop(dc, margin, -margin, margin, -margin)

	// The legend sits in its own column right of the plot rather than
	// inside it, where six policies' names would hide the data.
	pl := plot.NewLegend()
	pl.TextStyle.Font = font.From(sansFont, 10)
	pl.Top, pl.Left = true, true
	pl.Padding = vg.Points(3)
	pl.ThumbnailWidth = vg.Points(22)
	var legW vg.Length
	for _, name := range leg.names {
		pl.Add(name, leg.thumbs[name]...)
		if w := pl.ThumbnailWidth + pl.TextStyle.Width(" "+name); w > legW {
			legW = w
		}
	}
	if legW > 0 {
		legW += 3 * margin
		// Keep at least 60% of the width for data; a longer name is clipped.
		legW = min(legW, dc.Size().X*0.4)
	}
	plotC := dc
	plotC.Max.X -= legW
	p.Draw(plotC)
	if legW > 0 {
		legC := dc
		legC.Min.X = plotC.Max.X + 2*margin
		if p.Title.Text != "" {
			legC.Max.Y -= p.Title.TextStyle.Height(p.Title.Text) + p.Title.Padding
		}
		legC.Max.Y -= margin
		pl.Draw(legC)
	}

	var buf bytes.Buffer
	if _, err := cnv.WriteTo(&buf); err != nil {
		return err
	}
	_, err := w.Write(fixFonts(buf.Bytes()))
	return err
}

func styleText(p *plot.Plot) {
	p.Title.TextStyle.Font = font.From(boldFont, 13)
	p.Title.Padding = vg.Points(6)
	for _, ax := range []*plot.Axis{&p.X, &p.Y} {
		ax.Label.TextStyle.Font = font.From(sansFont, 11)
		ax.Tick.Label.Font = font.From(sansFont, 9)
	}
}

// fixFonts gives the SVG text a fallback: vgsvg names only the Liberation
// family it measured text with, and a browser without it would fall back to
// a serif font. Arial and Helvetica have the same metrics as Liberation Sans.
func fixFonts(svg []byte) []byte {
	return bytes.ReplaceAll(svg,
		[]byte("font-family:Liberation Sans;"),
		[]byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;"))
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// segments splits a series at non-finite values, so gaps stay visible
// instead of being bridged by a straight line.
func segments(xs, ys []float64) []plotter.XYs {
	var out []plotter.XYs
	start := -1
	var cur plotter.XYs
	for i := range xs {
		if finite(xs[i]) && finite(ys[i]) {
			if start < 0 {
				start = i
				cur = make(plotter.XYs, 0, len(xs)-i)
			}
			cur = append(cur, plotter.XY{X: xs[i], Y: ys[i]})
			continue
		}
		if start >= 0 {
			out = append(out, cur)
			start = -1
		}
	}
	if start >= 0 {
		out = append(out, cur)
	}
	return out
}

// bandRings turns each gap-free stretch of a band into a closed ring: along
// Hi forwards, then back along Lo.
func bandRings(b Band) []plotter.XYs {
	var rings []plotter.XYs
	flush := func(from, to int) {
		if to-from < 1 {
			return
		}
		ring := make(plotter.XYs, 0, 2*(to-from))
		for i := from; i < to; i++ {
			ring = append(ring, plotter.XY{X: b.X[i], Y: b.Hi[i]})
		}
		for i := to - 1; i >= from; i-- {
			ring = append(ring, plotter.XY{X: b.X[i], Y: b.Lo[i]})
		}
		rings = append(rings, ring)
	}
	from := 0
	for i := range b.X {
		if !finite(b.X[i]) || !finite(b.Lo[i]) || !finite(b.Hi[i]) {
			flush(from, i)
			from = i + 1
		}
	}
	flush(from, len(b.X))
	return rings
}

// xExtent is the finite x range over all lines.
func xExtent(lines []Line) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for i, x := range l.X {
			if finite(x) && finite(l.Y[i]) {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
	}
	return lo, hi
}

// decimate keeps the first, lowest, highest and last point of each x bucket
// (the "M4" reduction), which draws the same picture as the full series at
// screen resolution. Series that are short or not sorted by x are kept.
func decimate(seg plotter.XYs, x0, bw float64) plotter.XYs {
	if len(seg) <= maxLinePoints || !(bw > 0) || math.IsInf(bw, 0) {
		return seg
	}
	for i := 1; i < len(seg); i++ {
		if seg[i].X < seg[i-1].X {
			return seg
		}
	}
	bucket := func(x float64) int { return int((x - x0) / bw) }
	out := make(plotter.XYs, 0, 4*decimBuckets+4)
	var keep [4]int
	for i := 0; i < len(seg); {
		b := bucket(seg[i].X)
		lo, hi, j := i, i, i
		for ; j < len(seg) && bucket(seg[j].X) == b; j++ {
			if seg[j].Y < seg[lo].Y {
				lo = j
			}
			if seg[j].Y > seg[hi].Y {
				hi = j
			}
		}
		keep = [4]int{i, lo, hi, j - 1}
		slices.Sort(keep[:])
		for k, idx := range keep {
			if k == 0 || idx != keep[k-1] {
				out = append(out, seg[idx])
			}
		}
		i = j
	}
	return out
}

// bars draws one series of a bar chart; series sit side by side in a group
// centred on each x.
type bars struct {
	xys      plotter.XYs
	color    color.Color
	off, wid float64 // bar offset from x and width, in x units
}

func addBars(p *plot.Plot, leg *legend, c Chart, chart int, pal *palette) {
	var xs []float64
	for _, l := range c.Lines {
		for i, x := range l.X {
			if finite(x) && finite(l.Y[i]) {
				xs = append(xs, x)
			}
		}
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	step := 1.0
	if len(xs) > 1 {
		step = math.Inf(1)
		for i := 1; i < len(xs); i++ {
			step = math.Min(step, xs[i]-xs[i-1])
		}
	}
	n := float64(len(c.Lines))
	wid := 0.8 * step / n
	for i, l := range c.Lines {
		key := seriesKey(l.Name, chart, "line", i)
		b := &bars{color: pal.colour(key), wid: wid, off: (float64(i) - (n-1)/2) * wid}
		for _, seg := range segments(l.X, l.Y) {
			b.xys = append(b.xys, seg...)
		}
		if len(b.xys) > 0 {
			p.Add(b)
		}
		leg.add(l.Name, b)
	}
}

func (b *bars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	var path vg.Path
	for _, pt := range b.xys {
		x := pt.X + b.off
		ring := c.ClipPolygonXY([]vg.Point{
			{X: trX(x - b.wid/2), Y: trY(0)}, {X: trX(x - b.wid/2), Y: trY(pt.Y)},
			{X: trX(x + b.wid/2), Y: trY(pt.Y)}, {X: trX(x + b.wid/2), Y: trY(0)},
		})
		if len(ring) == 0 {
			continue
		}
		path.Move(ring[0])
		for _, q := range ring[1:] {
			path.Line(q)
		}
		path.Close()
	}
	if len(path) > 0 {
		// One path for the whole series keeps the SVG small.
		c.SetColor(b.color)
		c.Fill(path)
	}
}

// DataRange includes y = 0, where the bars start.
func (b *bars) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = plotter.XYRange(b.xys)
	return xmin + b.off - b.wid/2, xmax + b.off + b.wid/2, math.Min(ymin, 0), math.Max(ymax, 0)
}

func (b *bars) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(b.color, []vg.Point{
		{X: c.Min.X, Y: c.Min.Y}, {X: c.Min.X, Y: c.Max.Y},
		{X: c.Max.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Min.Y},
	})
}
