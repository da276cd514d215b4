package prometheus

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
)

const (
	cpuQ  = "rate(libvirt_domain_info_cpu_time_seconds_total{"
	memQ  = "libvirt_domain_info_memory_usage_bytes{"
	seenQ = "timestamp(libvirt_domain_info_cpu_time_seconds_total{"
	upQ   = "timestamp(libvirt_up{"
)

func memCluster(t *testing.T) *memory.Driver {
	t.Helper()
	h := func(id string) hypervisor.Host {
		return hypervisor.Host{ID: id, Capacity: model.Resources{CPU: 4000, Mem: 8192}, PEs: 4, PEMIPS: 1000}
	}
	d := memory.New(memory.Options{}, h("h1"), h("h2"), h("h3"))
	for _, v := range []struct{ id, host string }{{"a", "h1"}, {"b", "h1"}, {"c", "h2"}} {
		vm := hypervisor.VM{ID: v.id, Host: v.host, State: hypervisor.StateRunning, VCPUs: 2, MemMiB: 1024, Size: model.Resources{CPU: 2000, Mem: 1024}}
		if err := d.AddVM(vm, memory.Usage{CPUUtil: 0.1}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestStatsAndHolds: readings come from Prometheus in the driver's units; a
// host whose VM's series is stale, and one whose exporter is absent, are held
// with a reason naming the cause; a fresh host is not.
func TestStatsAndHolds(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	f := &fakeProm{instant: map[string][]fakeSeries{
		cpuQ: {{labels: vmLabels("a", "h1"), value: 1.5}, {labels: vmLabels("b", "h1"), value: 3}, {labels: vmLabels("c", "h2"), value: 0.5}},
		memQ: {{labels: vmLabels("a", "h1"), value: 512 << 20}, {labels: vmLabels("c", "h2"), value: 1 << 30}},
		seenQ: {{labels: vmLabels("a", "h1"), value: float64(now.Unix())}, {labels: vmLabels("b", "h1"), value: float64(now.Unix() - 5)},
			{labels: vmLabels("c", "h2"), value: float64(now.Add(-10 * time.Minute).Unix())}},
		upQ: {{labels: map[string]string{"host": "h1"}, value: float64(now.Unix())}, {labels: map[string]string{"host": "h2"}, value: float64(now.Unix())}},
	}}
	src, err := New(Config{URL: f.start(t), MaxAge: time.Minute}, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDriver(memCluster(t), src)
	ctx := context.Background()
	if _, err := d.Hosts(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.VMs(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hypervisor.VMStats{}
	for _, s := range st.VMs {
		got[s.VM] = s
	}
	a, b := got["a"], got["b"]
	if a.CPUCores != 1.5 || a.CPUUtil != 0.75 || a.MemMiB != 512 || a.Interval != 2*time.Minute || a.Host != "h1" {
		t.Errorf("a: %+v", a)
	}
	if b.CPUUtil != 1 || b.CPUCores != 3 || b.MemMiB != 0 {
		t.Errorf("b (3 cores on 2 vCPUs, no memory series): %+v", b)
	}
	held := d.Held()
	if _, ok := held["h1"]; ok {
		t.Errorf("h1 is fresh but held: %q", held["h1"])
	}
	if r := held["h2"]; !strings.Contains(r, "c's newest sample is 10m0s old") {
		t.Errorf("h2's hold: %q", r)
	}
	if r := held["h3"]; !strings.Contains(r, `no sample from host h3's exporter (host="h3")`) {
		t.Errorf("h3's hold: %q", r)
	}
	if d.Holds() != 2 {
		t.Errorf("holds counted %d, want 2", d.Holds())
	}
	for _, hs := range st.Hosts {
		if hs.Host == "h1" && (hs.VMs != 2 || math.Abs(hs.CPUUtil-4.5/4) > 1e-9) {
			t.Errorf("h1 stats %+v", hs)
		}
	}

	// The VM's series disappears (its exporter stopped): a hold again.
	f.mu.Lock()
	f.instant[seenQ] = f.instant[seenQ][1:]
	f.mu.Unlock()
	if _, err := d.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if r := d.Held()["h1"]; !strings.Contains(r, "a has no series") {
		t.Errorf("h1 after a's series went: %q", r)
	}
}

// TestBackfill: history in batches restricted to each batch's hosts, in the
// model's units, gaps repeating the point before, from the first point on.
func TestBackfill(t *testing.T) {
	step := time.Minute
	now := time.Unix(1_700_000_000, 0).Truncate(step).Add(30 * time.Second)
	end := now.Truncate(step) // the last point: one before the present sample
	pts := func(vals ...float64) [][2]float64 {
		var out [][2]float64
		for i, v := range vals {
			if !math.IsNaN(v) {
				out = append(out, [2]float64{float64(end.Add(time.Duration(i-len(vals)+1) * step).Unix()), v})
			}
		}
		return out
	}
	nan := math.NaN()
	f := &fakeProm{ranges: map[string][]fakeSeries{
		cpuQ: {{labels: vmLabels("a", "h1"), points: pts(nan, 1, nan, 2)}, {labels: vmLabels("c", "h2"), points: pts(0.5, 0.5, 0.5, 0.5)},
			{labels: vmLabels("zz", "h9"), points: pts(1, 1, 1, 1)}},
		memQ: {{labels: vmLabels("a", "h1"), points: pts(nan, 1<<30, 1<<30, 1<<29)}},
	}}
	src, err := New(Config{URL: f.start(t), BatchVMs: 1}, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDriver(memCluster(t), src)
	vms, err := d.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]model.Resources{}
	var mu sync.Mutex
	n, err := d.Backfill(context.Background(), vms, step, 4, func(vm string, rs []model.Resources) {
		mu.Lock() // batches run in parallel
		got[vm] = rs
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || len(got) != 2 {
		t.Fatalf("backfilled %d VMs: %v", n, got)
	}
	a := got["a"]
	want := []model.Resources{{CPU: 1000, Mem: 1024}, {CPU: 1000, Mem: 1024}, {CPU: 2000, Mem: 512}}
	if len(a) != 3 || a[0] != want[0] || a[1] != want[1] || a[2] != want[2] {
		t.Errorf("a: %+v, want %+v", a, want)
	}
	if c := got["c"]; len(c) != 4 || c[3].CPU != 500 {
		t.Errorf("c: %+v", c)
	}
	batched := 0
	for _, q := range f.queries {
		if strings.Contains(q, `host=~"`) {
			batched++
		}
	}
	if batched < 4 { // batches h1 and h2, each asking at least cpu and mem
		t.Errorf("queries not batched by host: %q", f.queries)
	}
}

// TestCompression: answers are asked for uncompressed unless Compress is
// set (then Go's transport asks for gzip), for instant and range queries.
func TestCompression(t *testing.T) {
	for _, compress := range []bool{false, true} {
		f := &fakeProm{instant: map[string][]fakeSeries{cpuQ: {{labels: vmLabels("a", "h1"), value: 1}}},
			ranges: map[string][]fakeSeries{cpuQ: {{labels: vmLabels("a", "h1"), points: [][2]float64{{1_700_000_000, 1}}}}}}
		src, err := New(Config{URL: f.start(t), Compress: compress}, Options{Now: func() time.Time { return time.Unix(1_700_000_030, 0) }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := src.History(context.Background(), map[string][]string{"h1": {"a"}}, time.Minute, 4, func(Key, Points) {}); err != nil {
			t.Fatal(err)
		}
		want := "identity"
		if compress {
			want = "gzip"
		}
		if len(f.encs) < 2 {
			t.Fatalf("compress %v: %d requests", compress, len(f.encs))
		}
		for i, e := range f.encs {
			if e != want {
				t.Errorf("compress %v: request %d (%s) asked Accept-Encoding %q, want %q", compress, i, f.queries[i], e, want)
			}
		}
	}
}

// TestBackfillOldCoarser: history older than two days is read at
// BackfillOldStep, the last two days at the step, each point repeated for the
// steps it stands for, and each part's rate() spans its own step.
func TestBackfillOldCoarser(t *testing.T) {
	step := 10 * time.Minute
	now := time.Unix(1_700_000_000, 0).Truncate(step).Add(30 * time.Second)
	end := now.Truncate(step)
	const fine, n = 2 * 144, 2*144 + 6 // two days of 10-minute steps, and 6 older ones: two points at 30 minutes
	var pts [][2]float64
	for i := range fine {
		pts = append(pts, [2]float64{float64(end.Add(-time.Duration(fine-1-i) * step).Unix()), 0.5})
	}
	cEnd := end.Add(-fine * step)
	pts = append([][2]float64{{float64(cEnd.Add(-30 * time.Minute).Unix()), 1}, {float64(cEnd.Unix()), 2}}, pts...)
	// A point between the coarse ones: not asked for, so not answered.
	pts = append([][2]float64{{float64(cEnd.Add(-40 * time.Minute).Unix()), 3}}, pts...)
	f := &fakeProm{ranges: map[string][]fakeSeries{cpuQ: {{labels: vmLabels("a", "h1"), points: pts}}}}
	src, err := New(Config{URL: f.start(t), BackfillOldStep: 30 * time.Minute}, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDriver(memCluster(t), src)
	vms, err := d.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var a []model.Resources
	var mu sync.Mutex
	if _, err := d.Backfill(context.Background(), vms, step, n, func(vm string, rs []model.Resources) {
		mu.Lock()
		defer mu.Unlock()
		if vm == "a" {
			a = rs
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(a) != n {
		t.Fatalf("a: %d points, want %d", len(a), n)
	}
	for i, x := range a {
		want := 500.0 // 0.5 cores of 2 vCPUs, size 2000
		switch {
		case i < 3:
			want = 1000
		case i < 6:
			want = 2000
		}
		if x.CPU != want {
			t.Errorf("a[%d].CPU = %v, want %v", i, x.CPU, want)
		}
	}
	var windows []string
	for _, q := range f.queries {
		if strings.Contains(q, cpuQ) {
			windows = append(windows, q[strings.LastIndex(q, "["):])
		}
	}
	if !slices.Contains(windows, "[1800s])") || !slices.Contains(windows, "[600s])") {
		t.Errorf("cpu queries' windows %q, want 1800s and 600s", windows)
	}
}

// TestBackfillCoarse: past BackfillPoints the history is read at a multiple
// of the step, each point repeated for the steps it stands for, newest last;
// net is read as one sum of both directions.
func TestBackfillCoarse(t *testing.T) {
	step := time.Minute
	now := time.Unix(1_700_000_000, 0).Truncate(step).Add(30 * time.Second)
	end := now.Truncate(step)
	// n=5 with at most 2 points: read every 3 minutes, 2 points.
	at := func(i int) float64 { return float64(end.Add(-time.Duration(3*i) * step).Unix()) }
	f := &fakeProm{ranges: map[string][]fakeSeries{
		cpuQ:            {{labels: vmLabels("a", "h1"), points: [][2]float64{{at(1), 1}, {at(0), 2}}}},
		"receive_bytes": {{labels: vmLabels("a", "h1"), points: [][2]float64{{at(1), 1024}, {at(0), 2048}}}},
		// Two devices: summed with the receive side.
		"transmit_bytes": {{labels: map[string]string{"domain": "a", "host": "h1", "target_device": "vnet0"}, points: [][2]float64{{at(1), 512}, {at(0), 512}}},
			{labels: map[string]string{"domain": "a", "host": "h1", "target_device": "vnet1"}, points: [][2]float64{{at(1), 512}, {at(0), 1024}}}},
	}}
	src, err := New(Config{URL: f.start(t), BackfillPoints: 2}, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDriver(memCluster(t), src)
	vms, err := d.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var a []model.Resources
	var mu sync.Mutex
	if _, err := d.Backfill(context.Background(), vms, step, 5, func(vm string, rs []model.Resources) {
		mu.Lock()
		defer mu.Unlock()
		if vm == "a" {
			a = rs
		}
	}); err != nil {
		t.Fatal(err)
	}
	want := []float64{1000, 1000, 2000, 2000, 2000} // the older point's first step is beyond n
	if len(a) != len(want) {
		t.Fatalf("a: %d points %+v, want %d", len(a), a, len(want))
	}
	for i, w := range want {
		if a[i].CPU != w {
			t.Errorf("a[%d].CPU = %v, want %v (%+v)", i, a[i].CPU, w, a)
		}
	}
	if a[0].Net != 2 || a[4].Net != 3.5 {
		t.Errorf("net %v .. %v KiB/s, want 2 .. 3.5", a[0].Net, a[4].Net)
	}
	// The preset's `sum by (domain, host) (X)` goes to the server as X over
	// the 3-minute step; the source sums.
	inner := false
	for _, q := range f.queries {
		if strings.HasPrefix(q, "rate(libvirt_domain_interface_stats_transmit_bytes_total{") && strings.HasSuffix(q, "[180s])") {
			inner = true
		}
		if strings.Contains(q, "sum by") {
			t.Errorf("backfill query still aggregates on the server: %q", q)
		}
	}
	if !inner {
		t.Errorf("no inner net query over the 3-minute step: %q", f.queries)
	}
}

// TestBackfillQueries: templates aggregating by exactly VM and host are sent
// without the aggregation; others as written, net and disk pairs summed.
func TestBackfillQueries(t *testing.T) {
	src, err := New(Config{URL: "http://x", Queries: Queries{
		CPU:    `avg by ({{.VM}}, {{.Host}}) (my_cpu{ {{- .Selector -}} })`,
		NetTx:  `max by ({{.VM}}, {{.Host}}) (tx{ {{- .Selector -}} })`,
		DiskRd: " ", DiskWr: " ",
	}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	bqs, err := src.backfillQueries(src.vars([]string{"h1"}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range bqs {
		got = append(got, fmt.Sprintf("%s %c %s", queryField[q.slot], max(q.op, ' '), q.q))
	}
	want := []string{
		`cpu   avg by (domain, host) (my_cpu{host=~"h1"})`,
		`mem m libvirt_domain_info_memory_usage_bytes{host=~"h1"}`,
		// sum and max do not mix: one server-side sum
		`net_rx   (sum by (domain, host) (rate(libvirt_domain_interface_stats_receive_bytes_total{host=~"h1"}[60s]))) + (max by (domain, host) (tx{host=~"h1"}))`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
