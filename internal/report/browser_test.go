package report

import (
	"context"
	"flag"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// -report.out keeps the sample report and its screenshot for a person to
// look at: go test ./internal/report -run Browser -args -report.out=/tmp/r
var reportOut = flag.String("report.out", "", "write the browser test's report and screenshot.png here")

// chromium finds a Chromium binary under the names Debian and others use.
func chromium() (string, bool) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// TestReportRendersInBrowser loads a sample report in headless Chromium and
// checks that it produced a real screenshot in which the charts were drawn.
func TestReportRendersInBrowser(t *testing.T) {
	bin, ok := chromium()
	if !ok {
		t.Skip("no chromium on PATH (Debian: apt-get install -y chromium)")
	}
	if testing.Short() {
		t.Skip("starts a browser; skipped in -short mode")
	}
	dir := *reportOut
	if dir == "" {
		dir = t.TempDir()
	}
	index, err := Write(dir, samplePage(288))
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(index)
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "screenshot.png")
	os.Remove(shot)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	profile := t.TempDir() // a fresh profile: no clash with a running browser
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--no-first-run", "--user-data-dir="+profile,
		"--screenshot="+shot, "--window-size=1200,2000",
		"file://"+filepath.ToSlash(abs))
	cmd.Env = append(os.Environ(), "HOME="+profile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium failed: %v\n%s", err, out)
	}

	fi, err := os.Stat(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, out)
	}
	// A blank 1200×2000 page compresses to a few kB; a page with text and
	// charts is far larger.
	if fi.Size() < 50_000 {
		t.Errorf("screenshot is only %d bytes", fi.Size())
	}

	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 2000 {
		t.Errorf("screenshot is %v, want 1200×2000", b)
	}
	// The first series colour must show up: proof that the inline SVG
	// charts were drawn, not just the text around them.
	if n := countNear(img, tableau10[0].R, tableau10[0].G, tableau10[0].B, 24); n < 200 {
		t.Errorf("only %d pixels of the first series colour: charts not drawn?", n)
	}
	t.Logf("screenshot %s: %d bytes", shot, fi.Size())
}

// countNear counts pixels within tol of the colour (r, g, b) on each channel.
func countNear(img image.Image, r, g, b uint8, tol int) int {
	near := func(a uint32, want uint8) bool {
		d := int(a>>8) - int(want)
		return d >= -tol && d <= tol
	}
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr, r) && near(pg, g) && near(pb, b) {
				n++
			}
		}
	}
	return n
}
