// Command promdata writes a Prometheus TSDB holding synthetic
// prometheus-libvirt-exporter data for a fleet, for headroom's Prometheus
// source benchmark (internal/source/prometheus, BenchmarkPrometheusFleet).
//
// It writes the blocks directly (chunks, index, meta.json) with the tsdb
// packages of Prometheus 2.42, the version Debian 12 ships, instead of going
// through `promtool tsdb create-blocks-from openmetrics`: promtool 2.42 re-reads
// its whole input for every 2-hour block, which made a week for 10,000 VMs take
// about 50 minutes. This is a separate module so that headroom itself does not
// depend on the Prometheus server.
//
//	go run . -out /var/tmp/headroom-promweek -hosts 1000 -vms 10 -days 7 -scrape 1m
//
// The directory gets tsdb/ (one block per day) and end (the Unix time of the
// newest sample). An existing complete data set with the same parameters is
// kept: re-runs reuse it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	mrand "math/rand"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
)

// samplesPerChunk is what Prometheus' head cuts a chunk at.
const samplesPerChunk = 120

type params struct {
	Hosts, VMs, Days int
	Scrape           time.Duration
	End              int64 // ms
	Seed             uint64
}

func main() {
	var p params
	out := flag.String("out", "/var/tmp/headroom-promweek", "output directory")
	flag.IntVar(&p.Hosts, "hosts", 1000, "hosts")
	flag.IntVar(&p.VMs, "vms", 10, "VMs per host")
	flag.IntVar(&p.Days, "days", 7, "days of history")
	flag.DurationVar(&p.Scrape, "scrape", time.Minute, "scrape interval (the preset's 2m rate window wants at most 1m)")
	flag.Uint64Var(&p.Seed, "seed", 1, "random seed")
	end := flag.Int64("end", 0, "Unix time of the newest sample (default: now, truncated to the hour)")
	flag.Parse()
	if *end == 0 {
		*end = time.Now().Truncate(time.Hour).Unix()
	}
	p.End = *end * 1000
	if err := run(*out, p); err != nil {
		fmt.Fprintln(os.Stderr, "promdata:", err)
		os.Exit(1)
	}
}

func run(out string, p params) error {
	stamp, _ := json.Marshal(struct {
		Hosts, VMs, Days int
		Scrape           string
		Seed             uint64
	}{p.Hosts, p.VMs, p.Days, p.Scrape.String(), p.Seed})
	if b, err := os.ReadFile(filepath.Join(out, "params.json")); err == nil && string(b) == string(stamp) {
		if _, err := os.Stat(filepath.Join(out, "end")); err == nil {
			fmt.Println("promdata: reusing", out)
			return nil
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	dir := filepath.Join(out, "tsdb")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	t0 := time.Now()
	st, err := write(dir, p)
	if err != nil {
		return err
	}
	fmt.Printf("promdata: %d hosts, %d VMs, %d series, %d samples (%d per series, every %v), %d blocks, in %v\n",
		p.Hosts, p.Hosts*p.VMs, st.NumSeries, st.NumSamples, st.NumSamples/max(st.NumSeries, 1), p.Scrape, p.Days,
		time.Since(t0).Round(time.Millisecond))
	if err := os.WriteFile(filepath.Join(out, "params.json"), stamp, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "end"), []byte(strconv.FormatInt(p.End/1000, 10)), 0o644)
}

// series is one exporter series: its labels and how its values come about.
type series struct {
	lset labels.Labels
	kind int
	vm   int // VM index, or host index for kUp
}

const (
	kCPU = iota // libvirt_domain_info_cpu_time_seconds_total (counter, seconds)
	kMem        // libvirt_domain_info_memory_usage_bytes (gauge)
	kRx         // libvirt_domain_interface_stats_receive_bytes_total
	kTx         // libvirt_domain_interface_stats_transmit_bytes_total
	kRd         // libvirt_domain_block_stats_read_bytes_total
	kWr         // libvirt_domain_block_stats_write_bytes_total
	kUp         // libvirt_up (gauge, per host)
	nKinds
)

var names = [nKinds]string{
	"libvirt_domain_info_cpu_time_seconds_total", "libvirt_domain_info_memory_usage_bytes",
	"libvirt_domain_interface_stats_receive_bytes_total", "libvirt_domain_interface_stats_transmit_bytes_total",
	"libvirt_domain_block_stats_read_bytes_total", "libvirt_domain_block_stats_write_bytes_total", "libvirt_up",
}

func fleet(p params) []series {
	var ss []series
	for h := range p.Hosts {
		host := fmt.Sprintf("h%04d", h)
		inst := host + ":9177"
		ss = append(ss, series{labels.FromStrings("__name__", names[kUp], "host", host, "instance", inst, "job", "libvirt"), kUp, h})
		for v := range p.VMs {
			vm := h*p.VMs + v
			dom := fmt.Sprintf("vm%04d-%d", h, v)
			for k := kCPU; k < kUp; k++ {
				l := []string{"__name__", names[k], "domain", dom, "host", host, "instance", inst, "job", "libvirt"}
				switch k {
				case kRx, kTx:
					l = append(l, "target_device", "vnet"+strconv.Itoa(v))
				case kRd, kWr:
					l = append(l, "target_device", "vda")
				}
				ss = append(ss, series{labels.FromStrings(l...), k, vm})
			}
		}
	}
	sort.Slice(ss, func(i, j int) bool { return labels.Compare(ss[i].lset, ss[j].lset) < 0 })
	return ss
}

// vmShape is one VM's load: a daily curve peaking at peak (hours), lower at
// weekends for office-hours VMs, with AR(1) noise.
type vmShape struct {
	base, amp, peak, weekend, noise float64
	memBytes                        float64
	net, txRatio, disk, wrRatio     float64
}

const vcpus = 2 // the benchmark's VMs have 2 vCPUs

func shapeOf(p params, vm int) vmShape {
	r := rand.New(rand.NewPCG(p.Seed, uint64(vm)))
	s := vmShape{base: vcpus * (0.03 + 0.3*r.Float64()), weekend: 0.4 + 0.5*r.Float64()}
	s.amp = s.base * (0.3 + 1.2*r.Float64())
	if r.Float64() < 0.2 { // batch jobs at night
		s.peak, s.weekend = 2+2*r.Float64(), 1
	} else {
		s.peak = 14 + 2*r.NormFloat64()
	}
	s.noise = 0.05 * s.base
	s.memBytes = float64((2 + r.IntN(15)) * 512 << 20)
	s.net = math.Exp(math.Log(1e4) + r.Float64()*math.Log(300)) // 10 kB/s .. 3 MB/s
	s.txRatio = 0.2 + r.Float64()
	s.disk = math.Exp(math.Log(5e3) + r.Float64()*math.Log(200))
	s.wrRatio = 0.5 + 2*r.Float64()
	return s
}

// daily is 0..1, 1 at the peak hour.
func daily(hour, peak float64) float64 {
	c := 0.5 * (1 + math.Cos(2*math.Pi*(hour-peak)/24))
	return c * c
}

// values writes series s's values at ts into out.
func values(p params, s series, ts []int64, out []float64) {
	if s.kind == kUp {
		for i := range out {
			out[i] = 1
		}
		return
	}
	sh := shapeOf(p, s.vm)
	r := rand.New(rand.NewPCG(p.Seed^0x9e3779b97f4a7c15, uint64(s.vm)*nKinds+uint64(s.kind)))
	// The CPU noise is the VM's own (one stream per VM), so that CPU, net and
	// disk move together.
	nr := rand.New(rand.NewPCG(p.Seed^0x51ed27, uint64(s.vm)))
	step := p.Scrape.Seconds()
	cum := r.Float64() * 1e6 // counters started long ago
	if s.kind != kCPU {
		cum = math.Floor(cum * 1e3)
	}
	e := 0.0
	for i, t := range ts {
		sec := t / 1000
		hour := float64(sec%86400) / 3600
		wk := 1.0
		// 1970-01-01 was a Thursday (4); Saturday is 6, Sunday 0.
		if d := (sec/86400 + 4) % 7; d == 6 || d == 0 {
			wk = sh.weekend
		}
		e = 0.9*e + sh.noise*nr.NormFloat64()
		cores := min(max(sh.base+sh.amp*wk*daily(hour, sh.peak)+e, 0), vcpus)
		act := cores / (sh.base + sh.amp) // 0..~1: activity drives I/O
		switch s.kind {
		case kCPU:
			cum += cores * step
			out[i] = math.Round(cum*1e9) / 1e9
			continue
		case kMem:
			out[i] = sh.memBytes
			continue
		}
		var rate float64
		switch s.kind {
		case kRx:
			rate = sh.net * (0.2 + act)
		case kTx:
			rate = sh.net * sh.txRatio * (0.2 + act)
		case kRd:
			rate = sh.disk * (0.1 + act)
		case kWr:
			rate = sh.disk * sh.wrRatio * (0.1 + act)
		}
		cum += math.Floor(rate * step * math.Exp(0.2*r.NormFloat64()))
		out[i] = cum
	}
}

type block struct {
	dir      string
	min, max int64 // ms, max exclusive
	iw       *index.Writer
	cw       *chunks.Writer
	stats    tsdb.BlockStats
	in       chan blockSeries
}

type blockSeries struct {
	ref  storage.SeriesRef
	lset labels.Labels
	ts   []int64
	vs   []float64
}

func write(dir string, p params) (tsdb.BlockStats, error) {
	ss := fleet(p)
	symbols := map[string]struct{}{}
	for _, s := range ss {
		s.lset.Range(func(l labels.Label) {
			symbols[l.Name] = struct{}{}
			symbols[l.Value] = struct{}{}
		})
	}
	syms := make([]string, 0, len(symbols))
	for s := range symbols {
		syms = append(syms, s)
	}
	sort.Strings(syms)

	step := p.Scrape.Milliseconds()
	day := int64(24 * time.Hour / time.Millisecond)
	first := p.End - int64(p.Days)*day + step // the newest sample is at End
	var blocks []*block
	for d := range p.Days {
		lo := p.End - int64(p.Days-d)*day + 1
		b := &block{min: lo, max: lo + day, in: make(chan blockSeries, 64)}
		blocks = append(blocks, b)
	}
	ctx := context.Background()
	for _, b := range blocks {
		id := ulid.MustNew(uint64(b.max), mrand.New(mrand.NewSource(int64(p.Seed)^b.min)))
		b.dir = filepath.Join(dir, id.String())
		var err error
		if b.cw, err = chunks.NewWriter(filepath.Join(b.dir, "chunks")); err != nil {
			return tsdb.BlockStats{}, err
		}
		if b.iw, err = index.NewWriter(ctx, filepath.Join(b.dir, "index")); err != nil {
			return tsdb.BlockStats{}, err
		}
		for _, s := range syms {
			if err := b.iw.AddSymbol(s); err != nil {
				return tsdb.BlockStats{}, err
			}
		}
		b.stats.NumSeries = uint64(len(ss))
	}
	// Each block encodes its chunks in its own goroutine; series go to every
	// block in label order, as the index wants.
	var wg sync.WaitGroup
	errs := make([]error, len(blocks))
	for i, b := range blocks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range b.in {
				if errs[i] != nil {
					continue
				}
				errs[i] = b.add(s)
			}
		}()
	}
	n := int((p.End-first)/step) + 1
	ts := make([]int64, n)
	for i := range ts {
		ts[i] = first + int64(i)*step
	}
	for ref, s := range ss {
		vs := make([]float64, n)
		values(p, s, ts, vs)
		lo := 0
		for _, b := range blocks {
			hi := sort.Search(n, func(i int) bool { return ts[i] >= b.max })
			b.in <- blockSeries{storage.SeriesRef(ref + 1), s.lset, ts[lo:hi], vs[lo:hi]}
			lo = hi
		}
	}
	var total tsdb.BlockStats
	for _, b := range blocks {
		close(b.in)
	}
	wg.Wait()
	for i, b := range blocks {
		if errs[i] != nil {
			return total, errs[i]
		}
		if err := b.cw.Close(); err != nil {
			return total, err
		}
		if err := b.iw.Close(); err != nil {
			return total, err
		}
		id, _ := ulid.Parse(filepath.Base(b.dir))
		meta := tsdb.BlockMeta{ULID: id, MinTime: b.min, MaxTime: b.max, Version: 1, Stats: b.stats}
		meta.Compaction.Level = 1
		meta.Compaction.Sources = []ulid.ULID{id}
		mb, err := json.MarshalIndent(meta, "", "\t")
		if err != nil {
			return total, err
		}
		if err := os.WriteFile(filepath.Join(b.dir, "meta.json"), mb, 0o644); err != nil {
			return total, err
		}
		total.NumSeries = b.stats.NumSeries
		total.NumSamples += b.stats.NumSamples
		total.NumChunks += b.stats.NumChunks
	}
	return total, nil
}

func (b *block) add(s blockSeries) error {
	var metas []chunks.Meta
	for lo := 0; lo < len(s.ts); lo += samplesPerChunk {
		hi := min(lo+samplesPerChunk, len(s.ts))
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			app.Append(s.ts[i], s.vs[i])
		}
		metas = append(metas, chunks.Meta{Chunk: c, MinTime: s.ts[lo], MaxTime: s.ts[hi-1]})
		b.stats.NumSamples += uint64(hi - lo)
	}
	b.stats.NumChunks += uint64(len(metas))
	if err := b.cw.WriteChunks(metas...); err != nil {
		return err
	}
	return b.iw.AddSeries(s.ref, s.lset, metas...)
}
