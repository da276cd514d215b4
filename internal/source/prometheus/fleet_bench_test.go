package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkPrometheusFleet reads a fleet from a real Prometheus whose TSDB
// holds a week of synthetic prometheus-libvirt-exporter data for 1,000 hosts
// and 10,000 VMs, scraped every minute, written by tools/promdata (a separate
// module; about 7 minutes on this machine, cached):
//
//	(cd tools/promdata && go run . -out /var/tmp/headroom-promweek)
//	HEADROOM_PROM_BENCH=1 flock /tmp/headroom-lab.lock go test -run '^$' -bench PrometheusFleet -benchtime 3x -timeout 1h ./internal/source/prometheus
//
// It reports the warm-start backfill (every VM, the engine's history length at
// the controller's default 1-minute interval, HEADROOM_PROM_STEP to change)
// and one cycle's queries, with the CPU time Prometheus and this process spent
// and their peak RSS. HEADROOM_PROM_DATA names another data directory;
// HEADROOM_PROM_BACKFILL_POINTS and HEADROOM_PROM_BACKFILL_OLD_STEP override
// Config.BackfillPoints and BackfillOldStep, HEADROOM_PROM_COMPRESS=1 sets
// Compress. It skips
// without HEADROOM_PROM_BENCH=1, without prometheus or without the data.
// weekData is a running Prometheus on the week's data set.
type weekData struct {
	addr       string
	pid        int
	end        time.Time
	nh, perVMs int
	days       int
	dir        string
}

// startWeek starts Prometheus on the data set (see BenchmarkPrometheusFleet),
// or skips.
func startWeek(tb testing.TB) weekData {
	if os.Getenv("HEADROOM_PROM_BENCH") != "1" {
		tb.Skip("set HEADROOM_PROM_BENCH=1 (starts Prometheus on a prebuilt week of data; minutes)")
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		tb.Skip("prometheus not installed (scripts/install-deps.sh)")
	}
	dir := os.Getenv("HEADROOM_PROM_DATA")
	if dir == "" {
		dir = "/var/tmp/headroom-promweek"
	}
	eb, err := os.ReadFile(filepath.Join(dir, "end"))
	if err != nil {
		tb.Skipf("no data set in %s: build it with (cd tools/promdata && go run . -out %s)", dir, dir)
	}
	var par struct{ Hosts, VMs, Days int }
	pb, err := os.ReadFile(filepath.Join(dir, "params.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(pb, &par); err != nil {
		tb.Fatalf("%s/params.json: %v", dir, err)
	}
	endUnix, err := strconv.ParseInt(strings.TrimSpace(string(eb)), 10, 64)
	if err != nil {
		tb.Fatalf("%s/end: %v", dir, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	work := tb.TempDir()
	os.WriteFile(filepath.Join(work, "prometheus.yml"), []byte("global: {scrape_interval: 1m}\n"), 0o644)
	// Day blocks stay as written: no compaction into larger ones while the
	// benchmark runs (max-block-duration), and no retention deletes them.
	cmd := exec.Command(bin, "--config.file="+filepath.Join(work, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--storage.tsdb.retention.time=3650d", "--storage.tsdb.max-block-duration=1d", "--web.listen-address="+addr,
		"--query.max-samples=200000000")
	logf, _ := os.Create(filepath.Join(work, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Prometheus dies with the benchmark even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	for i := 0; ; i++ {
		r, err := http.Get("http://" + addr + "/-/ready")
		if err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if r != nil {
			r.Body.Close()
		}
		if i > 600 {
			out, _ := os.ReadFile(filepath.Join(work, "prometheus.log"))
			tb.Fatalf("prometheus not ready after 5 min:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return weekData{addr: addr, pid: cmd.Process.Pid, end: time.Unix(endUnix, 0), nh: par.Hosts, perVMs: par.VMs, days: par.Days, dir: dir}
}

func BenchmarkPrometheusFleet(b *testing.B) {
	w := startWeek(b)
	dir, end, nh, perHost := w.dir, w.end, w.nh, w.perVMs
	par := struct{ Days int }{w.days}
	step := time.Minute
	if s, err := time.ParseDuration(os.Getenv("HEADROOM_PROM_STEP")); err == nil && s > 0 {
		step = s
	}
	addr := w.addr

	inner := memFleet(nh, perHost)
	defer inner.Close()
	// The preset and defaults: the data is scraped every minute, as the
	// default 2m rate window expects.
	cfg := Config{URL: "http://" + addr, Timeout: 5 * time.Minute, BackfillPoints: envInt("HEADROOM_PROM_BACKFILL_POINTS", 0)}
	if d, err := time.ParseDuration(os.Getenv("HEADROOM_PROM_BACKFILL_OLD_STEP")); err == nil && d > 0 {
		cfg.BackfillOldStep = d
	}
	cfg.Compress = os.Getenv("HEADROOM_PROM_COMPRESS") == "1"
	src, err := New(cfg, Options{Now: func() time.Time { return end.Add(time.Second) }})
	if err != nil {
		b.Fatal(err)
	}
	d := NewDriver(inner, src)
	ctx := context.Background()
	d.Hosts(ctx)
	vms, _ := d.VMs(ctx)
	// The controller's historyLen: a week at the interval plus 64.
	n := int(7*24*time.Hour/step) + 64
	b.Logf("data %s: %d hosts, %d VMs, %d days to %s; backfill %d points at %v (Prometheus read at %v, older than two days at %v), parallel %d, batch %d VMs",
		dir, nh, nh*perHost, par.Days, end.UTC().Format(time.RFC3339), n, step,
		step*time.Duration((n+src.cfg.BackfillPoints-1)/src.cfg.BackfillPoints), src.cfg.BackfillOldStep, src.cfg.Parallel, src.cfg.BatchVMs)
	b.ResetTimer()
	var fill, cycle time.Duration
	var samples, got int
	promCPU0, selfCPU0 := procCPU(w.pid), selfCPU()
	for b.Loop() {
		t0 := time.Now()
		var mu sync.Mutex
		samples = 0
		got, err = d.Backfill(ctx, vms, step, n, func(_ string, rs []model.Resources) {
			mu.Lock()
			samples += len(rs)
			mu.Unlock()
		})
		if err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		fill += el
		t1 := time.Now()
		st, err := d.Stats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cl := time.Since(t1)
		cycle += cl
		b.Logf("backfill %.2f s, cycle %.3f s", el.Seconds(), cl.Seconds())
		if got != nh*perHost || len(st.VMs) != nh*perHost || len(d.Held()) != 0 {
			b.Fatalf("backfilled %d VMs, stats for %d VMs, %d hosts held (%v)", got, len(st.VMs), len(d.Held()), firstOf(d.Held()))
		}
	}
	b.StopTimer()
	promCPU, ownCPU := procCPU(w.pid)-promCPU0, selfCPU()-selfCPU0
	b.ReportMetric(fill.Seconds()/float64(b.N), "s-backfill")
	b.ReportMetric(cycle.Seconds()/float64(b.N), "s-cycle-queries")
	b.ReportMetric(float64(got), "VMs-backfilled")
	b.ReportMetric(float64(samples)/float64(max(got, 1)), "samples/VM")
	b.ReportMetric(promCPU/float64(b.N), "s-prom-cpu/op")
	b.ReportMetric(ownCPU/float64(b.N), "s-client-cpu/op")
	b.ReportMetric(float64(procHWM(w.pid))/(1<<20), "MiB-prom-peak-rss")
	b.ReportMetric(float64(procHWM(os.Getpid()))/(1<<20), "MiB-client-peak-rss")
}

// procCPU is a process' user and system CPU seconds (Linux /proc).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return math.NaN()
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func selfCPU() float64 { return procCPU(os.Getpid()) }

// procHWM is a process' peak RSS in bytes (VmHWM).
func procHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func firstOf(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}
	return ""
}

// memFleet is the data set's fleet in the in-memory driver: nh 16-core hosts
// h0000.., perHost 2-vCPU VMs each, named as tools/promdata names them.
func memFleet(nh, perHost int) *memory.Driver {
	var hosts []hypervisor.Host
	for h := range nh {
		hosts = append(hosts, hypervisor.Host{ID: fmt.Sprintf("h%04d", h), PEs: 16, PEMIPS: 2000})
	}
	d := memory.New(memory.Options{}, hosts...)
	for h := range nh {
		for v := range perHost {
			d.AddVM(hypervisor.VM{ID: fmt.Sprintf("vm%04d-%d", h, v), Host: hosts[h].ID, State: hypervisor.StateRunning, VCPUs: 2,
				MemMiB: 4096, Size: model.Resources{CPU: 4000, Mem: 4096}}, memory.Usage{})
		}
	}
	return d
}
