package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/store"
)

// -dashboard.png writes the browser test's screenshot there (the README's is
// docs/dashboard.png): go test ./cmd/headroom -run Chromium -args -dashboard.png=$PWD/../../docs/dashboard.png
var dashboardPNG = flag.String("dashboard.png", "", "write the dashboard screenshot here")

// needTool skips (or fails, with HEADROOM_LAB_REQUIRED=1) a test whose system tool is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not installed (Debian: scripts/install-deps.sh)"
		if os.Getenv("HEADROOM_LAB_REQUIRED") == "1" {
			t.Fatal(msg + " and HEADROOM_LAB_REQUIRED=1")
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip("starts " + name + "; skipped in -short mode")
	}
	return p
}

type demoRun struct {
	url, token string
	lines      []string
}

// startDemo runs `headroom demo --listen 127.0.0.1:0` as the CLI does and waits
// for its URL and token lines; the test's end stops it.
func startDemo(t *testing.T, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	cmd := newRootCmd()
	cmd.SetOut(pw)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(append([]string{"demo", "--listen", "127.0.0.1:0"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx); pw.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})
	d := &demoRun{}
	got := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			l := sc.Text()
			if d.token == "" {
				d.lines = append(d.lines, l)
				if v, ok := strings.CutPrefix(l, "url: "); ok {
					d.url = v
				}
				if v, ok := strings.CutPrefix(l, "token: "); ok {
					d.token = v
					close(got)
				}
			}
		}
	}()
	select {
	case <-got:
	case err := <-done:
		t.Fatalf("demo ended before printing its token: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo printed no token in 60 s")
	}
	if !strings.HasPrefix(d.url, "http://127.0.0.1:") || !strings.HasPrefix(d.token, "hr_") {
		t.Fatalf("demo printed %q", d.lines)
	}
	return d
}

// get fetches an API path with the demo's token.
func (d *demoRun) get(t *testing.T, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", d.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// waitFor polls cond every 200 ms until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestDemoMetricsPassPromtool(t *testing.T) {
	promtool := needTool(t, "promtool")
	d := startDemo(t, "--speed", "600")
	waitFor(t, "14 cycles (13 to score forecasts)", 40*time.Second, func() bool {
		var st struct {
			Hosts []struct {
				Points []any `json:"points"`
			} `json:"hosts"`
		}
		d.get(t, "/api/state", &st)
		return len(st.Hosts) == 6 && len(st.Hosts[0].Points) >= 14
	})
	if code := d.get(t, "/api/state", nil); code != http.StatusOK {
		t.Fatalf("state: %d", code)
	}
	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %s, want 401", resp.Status)
	}
	req, _ := http.NewRequest("GET", d.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"headroom_host_forecast_upper{", "headroom_host_overload_probability{", "headroom_migrations_total{",
		"headroom_forecast_coverage_ratio{", "headroom_cycle_duration_seconds_bucket", "headroom_source_staleness_seconds{"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestPrometheusScrapesDemo(t *testing.T) {
	bin := needTool(t, "prometheus")
	d := startDemo(t, "--speed", "600")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte(d.token), 0o600)
	target := strings.TrimPrefix(d.url, "http://")
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: headroom
    authorization: {type: Bearer, credentials_file: %s}
    static_configs: [{targets: ['%s']}]
`, filepath.Join(dir, "token"), target)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600)
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	p := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)
	p.Stdout, p.Stderr = &logs, &logs
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); p.Wait() })
	query := func(q string) []map[string]any {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []map[string]any `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" {
			return nil
		}
		return r.Data.Result
	}
	deadline := time.Now().Add(60 * time.Second)
	var mig, fc []map[string]any
	for time.Now().Before(deadline) {
		mig = query(`headroom_migrations_total{job="headroom"}`)
		fc = query(`headroom_host_forecast_upper{job="headroom",resource="cpu"}`)
		if len(mig) > 0 && len(fc) == 6 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(mig) == 0 || len(fc) != 6 {
		t.Fatalf("Prometheus has %d migrations_total and %d host cpu forecast series, want some and 6\n%s", len(mig), len(fc), logs.String())
	}
	t.Logf("PromQL: %d headroom_migrations_total series, e.g. %v; %d host forecast series, e.g. %v", len(mig), mig[0], len(fc), fc[0])
}

func TestDashboardInChromium(t *testing.T) {
	bin := needTool(t, "chromium")
	d := startDemo(t, "--speed", "150", "--mode", "approve")

	// The page as headless Chromium dumps it (Jupyter-style login by URL).
	t.Run("dump-dom", func(t *testing.T) {
		profile := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir="+profile, "--virtual-time-budget=8000", "--dump-dom", d.url+"/?token="+d.token)
		cmd.Env = append(os.Environ(), "HOME="+profile)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium --dump-dom: %v", err)
		}
		for i := range 6 {
			if !bytes.Contains(out, []byte(fmt.Sprintf(`data-host="host%d"`, i))) {
				t.Errorf("dumped page lists no host%d:\n%.2000s", i, out)
			}
		}
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1600))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first call starts the browser and must have no timeout of its own.
	if err := chromedp.Do(ctx, chromedp.Navigate(d.url+"/?token="+d.token)); err != nil {
		t.Fatal(err)
	}
	ctx, tcancel := context.WithTimeout(ctx, 100*time.Second)
	defer tcancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if loc != d.url+"/" {
		t.Errorf("after login the browser is at %q, want %q (the token out of the address bar)", loc, d.url+"/")
	}
	count := func(sel string) int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, "six host cards", 30*time.Second, func() bool { return count("#hosts .host-card") == 6 })
	waitFor(t, "a forecast band drawn", 30*time.Second, func() bool { return count("#hosts svg.chart polygon.band") > 0 })

	// Approve the first pending move with a click; a cycle that still plans it
	// starts it. The plan may pick another VM of the same host instead, so click
	// again until one of the approved moves has started.
	var vm string
	var events []store.Event
	var clicked []string
	deadline := time.Now().Add(90 * time.Second)
	for vm == "" {
		if time.Now().After(deadline) {
			t.Fatalf("none of the approved moves %v started within 90 s", clicked)
		}
		waitFor(t, "a move awaiting approval", 40*time.Second, func() bool { return count("#pending button.approve") > 0 })
		const button = "#pending button.approve"
		attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(button), "data-vm"))
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(button))); err != nil {
			t.Fatal(err)
		}
		clicked = append(clicked, attr.Value)
		for range 25 {
			var moves []controller.Move
			d.get(t, "/api/inflight", &moves)
			for _, m := range moves {
				if slices.Contains(clicked, m.VM) {
					vm = m.VM
				}
			}
			for _, c := range clicked {
				if d.get(t, "/api/events?kind=migration-start&vm="+url.QueryEscape(c), &events); vm == "" && len(events) > 0 {
					vm = c
				}
			}
			if vm != "" {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	d.get(t, "/api/events?kind=approved&vm="+url.QueryEscape(vm), &events)
	if len(events) == 0 || !strings.Contains(events[len(events)-1].Message, "approved by demo-admin (admin)") {
		t.Errorf("approval of %s in the event log: %+v, want it to name demo-admin", vm, events)
	}
	waitFor(t, "the move on the page, in flight or in the event log", 20*time.Second, func() bool {
		return count(fmt.Sprintf("#inflight tr[data-vm=%q]", vm)) > 0 ||
			count(fmt.Sprintf(`#events tr[data-kind="migration-start"][data-vm=%q]`, vm)) > 0
	})

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	// The demand lines' colour must be on the page: the charts were drawn.
	blue := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			if near(r, 0x4e) && near(g, 0x79) && near(bb, 0xa7) {
				blue++
			}
		}
	}
	if blue < 200 {
		t.Errorf("only %d pixels of the demand colour: charts not drawn?", blue)
	}
	path := *dashboardPNG
	if path == "" {
		path = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("approved %s in the browser; screenshot %s (%d bytes, %v)", vm, path, len(shot), b.Size())
}

func near(c uint32, want int) bool {
	d := int(c>>8) - want
	return d >= -24 && d <= 24
}
