package prometheus_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/source/prometheus"
	"github.com/headroom/headroom/internal/store"
)

func TestMain(m *testing.M) { os.Exit(lab.RunShared(m, 2)) }

// daemon starts a long-running process inside a network namespace and stops
// it when the test ends (or earlier, through the returned func).
func daemon(t *testing.T, netns, logPath string, args ...string) (stop func()) {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		f.Close()
	}
	t.Cleanup(stop)
	return stop
}

// TestPrometheusSourceInLab: Debian's prometheus-libvirt-exporter, one in each
// lab host's namespace, and a real Prometheus scraping them every second; the
// controller runs with `source: prometheus`.
func TestPrometheusSourceInLab(t *testing.T) {
	for _, bin := range []string{"prometheus", "prometheus-libvirt-exporter"} {
		if _, err := exec.LookPath(bin); err != nil {
			msg := bin + " not installed (apt-get install prometheus prometheus-libvirt-exporter)"
			if os.Getenv(lab.RequiredEnv) == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	l := lab.Shared(t)
	l.BootVM(t, 0, lab.VMSpec{Name: "pa", MemoryMiB: 128, Args: "headroom.cpu=0.5"})
	l.BootVM(t, 1, lab.VMSpec{Name: "pb", MemoryMiB: 160, Args: "headroom.cpu=0.2"})
	t.Cleanup(func() { l.DestroyVM(context.Background(), "pa"); l.DestroyVM(context.Background(), "pb") })

	dir := t.TempDir()
	var stops []func()
	var targets strings.Builder
	for _, h := range l.Hosts {
		stops = append(stops, daemon(t, h.NetNS, filepath.Join(dir, h.ID+"-exporter.log"), "prometheus-libvirt-exporter",
			"--web.listen-address="+h.Addr+":9177", "--libvirt.uri="+h.URI()))
		fmt.Fprintf(&targets, "      - targets: ['%s:9177']\n        labels: {host: %s}\n", h.Addr, h.ID)
	}
	conf := "global: {scrape_interval: 1s, scrape_timeout: 900ms}\nscrape_configs:\n  - job_name: libvirt\n    static_configs:\n" + targets.String()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, l.NetNS, filepath.Join(dir, "prometheus.log"), "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address=127.0.0.1:9090")
	tr := &http.Transport{DialContext: l.Dial}
	cfg := prometheus.Config{URL: "http://127.0.0.1:9090", RateWindow: 10 * time.Second, MaxAge: 5 * time.Second}
	src, err := prometheus.New(cfg, prometheus.Options{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	var hosts []libvirt.HostConfig
	var hcs []controller.HostConfig
	for _, h := range l.Hosts {
		hosts = append(hosts, libvirt.HostConfig{ID: h.ID, URI: h.URI(), MigrateURI: h.MigrateURI()})
		hcs = append(hcs, controller.HostConfig{ID: h.ID, URI: h.URI(), MigrateURI: h.MigrateURI()})
	}
	lv, err := libvirt.New(libvirt.Config{Hosts: hosts, Dial: l.Dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lv.Close() })
	drv := prometheus.NewDriver(lv, src)
	ctx := context.Background()

	// Wait for 25 s of samples from both VMs: the rate window and a history.
	t0 := time.Now()
	for {
		drv.Hosts(ctx)
		drv.VMs(ctx)
		st, err := drv.Stats(ctx)
		if err == nil && len(drv.Held()) == 0 && len(st.VMs) == 2 && time.Since(t0) > 25*time.Second {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("no whole stats from Prometheus after 2 min: %v, held %v, %+v\n%s", err, drv.Held(), st, b[max(0, len(b)-2000):])
		}
		time.Sleep(time.Second)
	}
	t.Logf("Prometheus has both VMs after %v", time.Since(t0).Round(time.Second))

	t.Run("ReadingsAgreeWithLibvirt", func(t *testing.T) {
		// Both measure the same 10 s: libvirt between two calls, Prometheus
		// by rate() over its 10 s window ending at the second call.
		var worst float64
		for try := range 3 {
			_, err := lv.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(cfg.RateWindow)
			b, err := lv.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			p, err := drv.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			worst = 0
			for _, vm := range []string{"pa", "pb"} {
				x, y := find(b.VMs, vm), find(p.VMs, vm)
				if x == nil || y == nil || x.Interval == 0 || y.Interval == 0 {
					t.Fatalf("%s: libvirt %+v prometheus %+v", vm, x, y)
				}
				dc := math.Abs(y.CPUCores-x.CPUCores) / x.CPUCores
				dm := math.Abs(y.MemMiB-x.MemMiB) / x.MemMiB
				t.Logf("try %d %s: cores libvirt %.3f prometheus %.3f (%.1f%%), mem MiB %.1f / %.1f (%.1f%%), util %.3f / %.3f",
					try, vm, x.CPUCores, y.CPUCores, 100*dc, x.MemMiB, y.MemMiB, 100*dm, x.CPUUtil, y.CPUUtil)
				worst = max(worst, dc, dm)
			}
			if worst <= 0.10 {
				return
			}
		}
		t.Errorf("per-VM CPU or memory differs by %.1f%% > 10%% in every try", 100*worst)
	})

	log, err := store.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	ccfg := controller.Config{Interval: 4 * time.Second, ForecastDay: time.Minute, Mode: controller.DryRun, Hosts: hcs,
		Source: controller.SourcePrometheus, Prometheus: controller.SourceConfig{Config: cfg}}
	if _, err := ccfg.CheckSource(); err != nil {
		t.Fatal(err)
	}
	c, err := controller.New(ccfg, drv, log)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("FirstCycleHasHistory", func(t *testing.T) {
		cy, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		es, _ := log.List(store.Filter{Kind: controller.WarmStart})
		if len(es) != 1 {
			t.Fatalf("warm-start events: %+v", es)
		}
		var samples, vms, of int
		fmt.Sscanf(es[0].Message, "backfilled %d samples of %d of %d", &samples, &vms, &of)
		t.Logf("%s; first cycle: %d VMs, %d forecasts", es[0].Message, len(cy.Snapshot.VMs), len(cy.Forecasts))
		// 35 s and more of data at a 4 s interval: at least 6 points a VM.
		if vms != 2 || samples < 12 {
			t.Fatalf("backfill too short: %q", es[0].Message)
		}
	})

	t.Run("StoppedExporterHoldsItsHost", func(t *testing.T) {
		stops[1]()
		// Prometheus drops host1's series at its next failed scrape.
		t1 := time.Now()
		for {
			drv.Hosts(ctx)
			drv.VMs(ctx)
			if _, err := drv.Stats(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := drv.Held()["host1"]; ok {
				break
			}
			if time.Since(t1) > 30*time.Second {
				t.Fatal("host1 not held 30 s after its exporter stopped")
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("host1 held %v after its exporter stopped", time.Since(t1).Round(100*time.Millisecond))
		before := c.Holds()
		cy, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cy.Plan.Moves {
			if m.TargetHostID == "host1" || m.VMInstanceID == "pb" {
				t.Fatalf("a move touches the held host: %+v", m)
			}
		}
		for _, v := range cy.Snapshot.VMs {
			if v.ID == "pb" {
				t.Fatalf("the held host's VM is in the cycle: %+v", v)
			}
		}
		es, _ := log.List(store.Filter{Kind: controller.Hold})
		if len(es) == 0 || es[len(es)-1].Host != "host1" || !strings.Contains(es[len(es)-1].Message, "host1's exporter") {
			t.Fatalf("hold events %+v", es)
		}
		if c.Holds() <= before {
			t.Fatalf("holds not counted: %d then %d", before, c.Holds())
		}
		t.Logf("hold: %s; moves this cycle %d; holds counted %d", es[len(es)-1].Message, len(cy.Plan.Moves), c.Holds())
	})
}

func find(vms []hypervisor.VMStats, id string) *hypervisor.VMStats {
	for i := range vms {
		if vms[i].VM == id {
			return &vms[i]
		}
	}
	return nil
}
