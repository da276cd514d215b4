package prometheus

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
// holds synthetic exporter data built with `promtool tsdb create-blocks-from
// openmetrics`: HEADROOM_PROM_HOSTS hosts (default 1,000) of ten VMs each,
// HEADROOM_PROM_DAYS days (default 7) at a 5-minute step, each VM's CPU on a
// daily curve. It reports the warm-start backfill (a week at the 5-minute
// forecast step, every VM) and one cycle's queries. Building the data takes
// minutes, so it runs only with HEADROOM_PROM_BENCH=1; HEADROOM_PROM_DIR keeps
// the TSDB between runs.
//
//	HEADROOM_PROM_BENCH=1 go test -run '^$' -bench PrometheusFleet -benchtime 1x -timeout 2h ./internal/source/prometheus
func BenchmarkPrometheusFleet(b *testing.B) {
	if os.Getenv("HEADROOM_PROM_BENCH") != "1" {
		b.Skip("set HEADROOM_PROM_BENCH=1 (builds a TSDB with promtool; minutes)")
	}
	for _, bin := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skip(bin + " not installed")
		}
	}
	nh, days := envInt("HEADROOM_PROM_HOSTS", 1000), envInt("HEADROOM_PROM_DAYS", 7)
	const perHost = 10
	step := 5 * time.Minute
	dir := os.Getenv("HEADROOM_PROM_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	dir = filepath.Join(dir, fmt.Sprintf("h%d-d%d", nh, days))
	tsdb := filepath.Join(dir, "tsdb")
	endFile := filepath.Join(dir, "end")
	if _, err := os.Stat(endFile); err != nil {
		t0 := time.Now()
		end := time.Now().Truncate(step)
		if err := writeOpenMetrics(filepath.Join(dir, "data.om"), nh, perHost, days, step, end); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		out, err := exec.Command("promtool", "tsdb", "create-blocks-from", "openmetrics", filepath.Join(dir, "data.om"), tsdb).CombinedOutput()
		if err != nil {
			b.Fatalf("promtool: %v\n%s", err, out)
		}
		os.Remove(filepath.Join(dir, "data.om"))
		os.WriteFile(endFile, []byte(strconv.FormatInt(end.Unix(), 10)), 0o644)
		b.Logf("data: written in %v, blocks built in %v", t1.Sub(t0).Round(time.Second), time.Since(t1).Round(time.Second))
	}
	eb, _ := os.ReadFile(endFile)
	endUnix, _ := strconv.ParseInt(string(eb), 10, 64)
	end := time.Unix(endUnix, 0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte("global: {scrape_interval: 1m}\n"), 0o644)
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+tsdb,
		"--storage.tsdb.retention.time=3650d", "--web.listen-address="+addr, "--query.max-samples=200000000")
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() }()
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
			b.Fatal("prometheus not ready after 5 min")
		}
		time.Sleep(500 * time.Millisecond)
	}

	var hosts []hypervisor.Host
	for h := range nh {
		hosts = append(hosts, hypervisor.Host{ID: fmt.Sprintf("h%04d", h), PEs: 16, PEMIPS: 2000})
	}
	inner := memory.New(memory.Options{}, hosts...)
	defer inner.Close()
	for h := range nh {
		for v := range perHost {
			inner.AddVM(hypervisor.VM{ID: fmt.Sprintf("vm%04d-%d", h, v), Host: hosts[h].ID, State: hypervisor.StateRunning, VCPUs: 2,
				MemMiB: 4096, Size: model.Resources{CPU: 4000, Mem: 4096}}, memory.Usage{})
		}
	}
	src, err := New(Config{URL: "http://" + addr, RateWindow: 10 * time.Minute, MaxAge: 15 * time.Minute, Timeout: 5 * time.Minute},
		Options{Now: func() time.Time { return end.Add(time.Second) }})
	if err != nil {
		b.Fatal(err)
	}
	d := NewDriver(inner, src)
	ctx := context.Background()
	d.Hosts(ctx)
	vms, _ := d.VMs(ctx)
	n := int(7*24*time.Hour/step) + 64
	b.ResetTimer()
	var fill, cycle time.Duration
	var samples, got int
	for b.Loop() {
		t0 := time.Now()
		samples = 0
		var mu chanMutex = make(chan struct{}, 1)
		got, err = d.Backfill(ctx, vms, step, n, func(_ string, rs []model.Resources) {
			mu <- struct{}{}
			samples += len(rs)
			<-mu
		})
		if err != nil {
			b.Fatal(err)
		}
		fill += time.Since(t0)
		t1 := time.Now()
		st, err := d.Stats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cycle += time.Since(t1)
		if len(st.VMs) != nh*perHost || len(d.Held()) != 0 {
			b.Fatalf("stats for %d VMs, %d hosts held (%v)", len(st.VMs), len(d.Held()), firstOf(d.Held()))
		}
	}
	b.ReportMetric(fill.Seconds()/float64(b.N), "s-backfill")
	b.ReportMetric(cycle.Seconds()/float64(b.N), "s-cycle-queries")
	b.ReportMetric(float64(got), "VMs-backfilled")
	b.ReportMetric(float64(samples)/float64(max(got, 1)), "samples/VM")
}

type chanMutex chan struct{}

func firstOf(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}
	return ""
}

// writeOpenMetrics writes the exporter's CPU counter and memory gauge for
// every VM and libvirt_up for every host, one family after another, each
// series in time order, as promtool wants.
func writeOpenMetrics(path string, nh, perHost, days int, step time.Duration, end time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	pts := int(time.Duration(days) * 24 * time.Hour / step)
	start := end.Add(-time.Duration(pts-1) * step).Unix()
	sec := int64(step / time.Second)
	rng := rand.New(rand.NewPCG(1, 1))
	fmt.Fprintln(w, "# TYPE libvirt_domain_info_cpu_time_seconds counter")
	for h := range nh {
		for v := range perHost {
			base, amp, ph := 0.2+0.6*rng.Float64(), 0.5*rng.Float64(), 2*math.Pi*rng.Float64()
			cum := 0.0
			lbl := fmt.Sprintf(`libvirt_domain_info_cpu_time_seconds_total{domain="vm%04d-%d",host="h%04d"} `, h, v, h)
			for i := range pts {
				t := start + int64(i)*sec
				cores := max(base+amp*math.Sin(2*math.Pi*float64(t%86400)/86400+ph), 0)
				cum += cores * float64(sec)
				w.WriteString(lbl)
				w.WriteString(strconv.FormatFloat(cum, 'f', 1, 64))
				w.WriteByte(' ')
				w.WriteString(strconv.FormatInt(t, 10))
				w.WriteByte('\n')
			}
		}
	}
	fmt.Fprintln(w, "# TYPE libvirt_domain_info_memory_usage_bytes gauge")
	for h := range nh {
		for v := range perHost {
			lbl := fmt.Sprintf(`libvirt_domain_info_memory_usage_bytes{domain="vm%04d-%d",host="h%04d"} 4294967296 `, h, v, h)
			for i := range pts {
				w.WriteString(lbl)
				w.WriteString(strconv.FormatInt(start+int64(i)*sec, 10))
				w.WriteByte('\n')
			}
		}
	}
	fmt.Fprintln(w, "# TYPE libvirt_up gauge")
	for h := range nh {
		lbl := fmt.Sprintf(`libvirt_up{host="h%04d"} 1 `, h)
		for i := range pts {
			w.WriteString(lbl)
			w.WriteString(strconv.FormatInt(start+int64(i)*sec, 10))
			w.WriteByte('\n')
		}
	}
	fmt.Fprintln(w, "# EOF")
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
