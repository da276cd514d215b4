package prometheus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	pmodel "github.com/prometheus/common/model"
)

// Source queries one Prometheus server. It is safe for concurrent use.
type Source struct {
	cfg    Config
	api    v1.API
	tmpl   [nQueries]*template.Template
	now    func() time.Time
	values map[string]string // host ID -> host label value
}

// Options are what a YAML file cannot say.
type Options struct {
	// Transport carries the HTTP requests (default: http.DefaultTransport); a
	// test dials into a network namespace with it.
	Transport http.RoundTripper
	// Now is the clock queries are evaluated at (default time.Now); a
	// benchmark on recorded data sets it to the data's end.
	Now func() time.Time
}

// New checks cfg (after Defaults) and makes a client; it does not connect.
func New(cfg Config, opt Options) (*Source, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tmpl, err := cfg.templates()
	if err != nil {
		return nil, err
	}
	rt := opt.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	values := map[string]string{}
	for v, id := range cfg.Hosts {
		values[id] = v
	}
	return &Source{cfg: cfg, api: v1.NewAPI(c), tmpl: tmpl, now: now, values: values}, nil
}

// Config is the source's configuration with defaults filled.
func (s *Source) Config() Config { return s.cfg }

// Key names one VM on one host.
type Key struct{ VM, Host string }

// Reading is one VM's load as the queries return it; NaN where a query had no
// series for the VM.
type Reading struct {
	Cores    float64
	MemBytes float64
	NetRxBps float64
	NetTxBps float64
	DiskRdBps,
	DiskWrBps float64
}

func nanReading() Reading {
	n := math.NaN()
	return Reading{n, n, n, n, n, n}
}

func (r *Reading) set(q int, v float64) {
	switch q {
	case qCPU:
		r.Cores = v
	case qMem:
		r.MemBytes = v
	case qNetRx:
		r.NetRxBps = v
	case qNetTx:
		r.NetTxBps = v
	case qDiskRd:
		r.DiskRdBps = v
	case qDiskWr:
		r.DiskWrBps = v
	}
}

// Sample is one evaluation of every query.
type Sample struct {
	Time     time.Time
	VMs      map[Key]Reading
	VMSeen   map[Key]time.Time
	HostSeen map[string]time.Time // by host ID; nil when the preset has no host query
}

func (s *Source) vars(hostValues []string, window time.Duration) vars {
	return vars{Selector: s.cfg.selector(hostValues), Window: promDuration(window), VM: s.cfg.VMLabel, Host: s.cfg.HostLabel}
}

// Read evaluates every query at the source's now.
func (s *Source) Read(ctx context.Context) (Sample, error) {
	at := s.now()
	smp := Sample{Time: at, VMs: map[Key]Reading{}, VMSeen: map[Key]time.Time{}}
	if s.tmpl[qHostSeen] != nil {
		smp.HostSeen = map[string]time.Time{}
	}
	v := s.vars(nil, s.cfg.RateWindow)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for q, t := range s.tmpl {
		if t == nil {
			continue
		}
		wg.Go(func() {
			vec, err := s.instant(ctx, t, v, at)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("prometheus queries.%s: %w", queryField[q], err))
				return
			}
			for _, e := range vec {
				val := float64(e.Value)
				if q == qHostSeen {
					if h, ok := e.Metric[pmodel.LabelName(s.cfg.HostLabel)]; ok {
						smp.HostSeen[s.cfg.hostID(string(h))] = unixTime(val)
					}
					continue
				}
				k, ok := s.key(e.Metric)
				if !ok {
					continue
				}
				if q == qVMSeen {
					smp.VMSeen[k] = unixTime(val)
					continue
				}
				r, ok := smp.VMs[k]
				if !ok {
					r = nanReading()
				}
				r.set(q, val)
				smp.VMs[k] = r
			}
		})
	}
	wg.Wait()
	return smp, errors.Join(errs...)
}

func unixTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*1e9))
}

func (s *Source) key(m pmodel.Metric) (Key, bool) {
	vm, ok1 := m[pmodel.LabelName(s.cfg.VMLabel)]
	h, ok2 := m[pmodel.LabelName(s.cfg.HostLabel)]
	if !ok1 || !ok2 || vm == "" || h == "" {
		return Key{}, false
	}
	return Key{VM: string(vm), Host: s.cfg.hostID(string(h))}, true
}

func (s *Source) instant(ctx context.Context, t *template.Template, v vars, at time.Time) (pmodel.Vector, error) {
	q, err := render(t, v)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	val, _, _, err := s.api.Query(ctx, q, at, v1.WithTimeout(s.cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	vec, ok := val.(pmodel.Vector)
	if !ok {
		return nil, fmt.Errorf("%s: a %s, not an instant vector", q, val.Type())
	}
	return vec, nil
}

// Points are one VM's history at a fixed step, oldest first: Start is the
// first point's time. A point no query had is NaN in every field.
type Points struct {
	Start time.Time
	Step  time.Duration
	R     []Reading
}

// maxPoints keeps a range query under Prometheus' 11,000 points per series.
const maxPoints = 10000

// History reads up to n points at step, ending one step before now (the
// present is the caller's own sample), for the VMs on the given hosts (host
// ID -> VM names). It runs batches of about BatchVMs VMs, Parallel at a time,
// and calls fn for each VM once its batch is in; fn may be called from several
// goroutines at once. VMs without any data are not reported.
func (s *Source) History(ctx context.Context, hosts map[string][]string, step time.Duration, n int, fn func(Key, Points)) error {
	if step <= 0 || n <= 0 {
		return nil
	}
	end := s.now().Truncate(step)
	if !end.Before(s.now()) {
		end = end.Add(-step)
	}
	start := end.Add(-time.Duration(n-1) * step)
	ids := make([]string, 0, len(hosts))
	for h := range hosts {
		ids = append(ids, h)
	}
	sort.Strings(ids)
	var batches [][]string
	var cur []string
	count := 0
	for _, h := range ids {
		cur = append(cur, h)
		count += len(hosts[h])
		if count >= s.cfg.BatchVMs {
			batches = append(batches, cur)
			cur, count = nil, 0
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	window := max(s.cfg.RateWindow, step)
	sem := make(chan struct{}, s.cfg.Parallel)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, b := range batches {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.batch(ctx, b, start, end, step, n, window, hosts, fn); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Source) batch(ctx context.Context, hostIDs []string, start, end time.Time, step time.Duration, n int, window time.Duration,
	hosts map[string][]string, fn func(Key, Points)) error {
	values := make([]string, len(hostIDs))
	for i, h := range hostIDs {
		values[i] = h
		if v, ok := s.values[h]; ok {
			values[i] = v
		}
	}
	want := map[Key]bool{}
	for _, h := range hostIDs {
		for _, vm := range hosts[h] {
			want[Key{vm, h}] = true
		}
	}
	v := s.vars(values, window)
	got := map[Key][]Reading{}
	for q := qCPU; q <= qDiskWr; q++ {
		t := s.tmpl[q]
		if t == nil {
			continue
		}
		query, err := render(t, v)
		if err != nil {
			return fmt.Errorf("prometheus queries.%s: %w", queryField[q], err)
		}
		// Long histories go in pieces of maxPoints.
		for off := 0; off < n; off += maxPoints {
			m := min(maxPoints, n-off)
			from := start.Add(time.Duration(off) * step)
			mat, err := s.rangeQuery(ctx, query, v1.Range{Start: from, End: from.Add(time.Duration(m-1) * step), Step: step})
			if err != nil {
				return fmt.Errorf("prometheus queries.%s (backfill): %w", queryField[q], err)
			}
			for _, ss := range mat {
				k, ok := s.key(ss.Metric)
				if !ok || !want[k] {
					continue
				}
				rs := got[k]
				if rs == nil {
					rs = make([]Reading, n)
					for i := range rs {
						rs[i] = nanReading()
					}
					got[k] = rs
				}
				for _, p := range ss.Values {
					i := int(p.Timestamp.Time().Sub(start).Round(step) / step)
					if i >= 0 && i < n {
						rs[i].set(q, float64(p.Value))
					}
				}
			}
		}
	}
	for k, rs := range got {
		fn(k, Points{Start: start, Step: step, R: rs})
	}
	return nil
}

func (s *Source) rangeQuery(ctx context.Context, q string, r v1.Range) (pmodel.Matrix, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	val, _, _, err := s.api.QueryRange(ctx, q, r, v1.WithTimeout(s.cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	mat, ok := val.(pmodel.Matrix)
	if !ok {
		return nil, fmt.Errorf("%s: a %s, not a range vector", q, val.Type())
	}
	return mat, nil
}
