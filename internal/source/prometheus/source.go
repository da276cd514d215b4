package prometheus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
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
	hc     *http.Client      // backfill's own requests (see decodeMatrix)
	// inner are the queries whose template is `sum by (VM, Host) (X)` or
	// `max by (VM, Host) (X)`: a backfill asks for X and aggregates itself.
	inner [nQueries]*template.Template
	agg   [nQueries]byte // '+' sum, 'm' max
	bufs  sync.Pool      // *bytes.Buffer for backfill answers
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
	if !cfg.Compress {
		rt = identity{rt}
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
	src := &Source{cfg: cfg, api: v1.NewAPI(c), tmpl: tmpl, now: now, values: values, hc: &http.Client{Transport: rt}}
	base, over := Presets[cfg.Preset].list(), cfg.Queries.list()
	for q := qCPU; q <= qDiskWr; q++ {
		text := base[q]
		if over[q] != "" {
			text = over[q]
		}
		if m := outerAgg.FindStringSubmatch(text); m != nil && tmpl[q] != nil {
			if t, err := template.New(queryField[q]).Option("missingkey=error").Parse(m[2]); err == nil {
				src.inner[q], src.agg[q] = t, map[string]byte{"sum": '+', "max": 'm'}[m[1]]
			}
		}
	}
	return src, nil
}

// identity asks for uncompressed answers (see Config.Compress). Go's
// transport otherwise asks for gzip on its own and inflates the answer.
type identity struct{ rt http.RoundTripper }

func (t identity) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Accept-Encoding") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Accept-Encoding", "identity")
	}
	return t.rt.RoundTrip(r)
}

// outerAgg matches a template that aggregates by exactly the VM and host
// labels. Prometheus 2.42 spends about five times as long on such a range
// query as on its inner one (it builds each series' group at every step), so
// a backfill sends the inner query and sums or maxes by VM and host itself:
// the same result, a fraction of the server's time.
var outerAgg = regexp.MustCompile(`(?s)^\s*(sum|max) by \(\{\{\.VM\}\}, ?\{\{\.Host\}\}\) \((.*)\)\s*$`)

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

// combine adds v into field q: op '+' sums, 'm' keeps the maximum, 0 sets.
func (r *Reading) combine(q int, op byte, v float64) {
	if old := r.get(q); op != 0 && !math.IsNaN(old) {
		switch op {
		case '+':
			v += old
		case 'm':
			if math.IsNaN(v) || v < old {
				v = old
			}
		}
	}
	r.set(q, v)
}

func (r *Reading) get(q int) float64 {
	switch q {
	case qCPU:
		return r.Cores
	case qMem:
		return r.MemBytes
	case qNetRx:
		return r.NetRxBps
	case qNetTx:
		return r.NetTxBps
	case qDiskRd:
		return r.DiskRdBps
	case qDiskWr:
		return r.DiskWrBps
	}
	return math.NaN()
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

// Points are one VM's history, oldest first: Start is the first point's
// time. The first Coarse points are CoarseStep apart, the rest Step apart
// (history older than two days may be read coarser); a point stands
// for its step, ending at its time. A point no query had is NaN in every
// field. In a backfill, NetRxBps holds receive and transmit together
// (NetTxBps is NaN), and DiskRdBps reads and writes.
type Points struct {
	Start      time.Time
	Step       time.Duration
	R          []Reading
	Coarse     int
	CoarseStep time.Duration
}

// maxPoints keeps a range query under Prometheus' 11,000 points per series.
const maxPoints = 10000

// segment is one range of a backfill at one step: n points, the first at
// start, stored from R[off].
type segment struct {
	start time.Time
	step  time.Duration
	n     int
	off   int
}

// History reads the last n steps' history, ending one step before now (the
// present is the caller's own sample), for the VMs on the given hosts (host
// ID -> VM names). Past Config.BackfillPoints it reads at a multiple of step
// (Points.Step), each point then standing for that many steps; history
// older than two days may be read coarser still (Config.BackfillOldStep,
// Points.CoarseStep). It runs batches of about BatchVMs VMs, Parallel at a
// time, and calls fn for each VM once its batch is in; fn may be called from
// several goroutines at once. VMs without any data are not reported.
func (s *Source) History(ctx context.Context, hosts map[string][]string, step time.Duration, n int, fn func(Key, Points)) error {
	if step <= 0 || n <= 0 {
		return nil
	}
	end := s.now().Truncate(step)
	if !end.Before(s.now()) {
		end = end.Add(-step)
	}
	segs := s.segments(end, step, n)
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
			if err := s.batch(ctx, b, segs, hosts, fn); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// segments splits n steps ending at end into what a backfill reads: the
// last day (or all of it) at step times k, k the smallest multiple that
// keeps the n steps within BackfillPoints, and, when BackfillOldStep is
// coarser than that, the older steps at BackfillOldStep (a multiple of
// step). Oldest first.
func (s *Source) segments(end time.Time, step time.Duration, n int) []segment {
	k := (n + s.cfg.BackfillPoints - 1) / s.cfg.BackfillPoints
	fine := step * time.Duration(k)
	kc := max(int((s.cfg.BackfillOldStep+step/2)/step), k)
	// The last two days stay fine: the forecast's daily lag reads the last
	// day, and the blend learns its weights over the day before it (each
	// sample's error against its own daily lag).
	nFine := n // steps read at the fine step
	if days := 2 * int((24*time.Hour+step-1)/step); kc > k && n > days {
		nFine = days
	}
	pf := (nFine + k - 1) / k
	fStart := end.Add(-time.Duration(pf-1) * fine)
	if nFine == n {
		return []segment{{fStart, fine, pf, 0}}
	}
	coarse := step * time.Duration(kc)
	pc := (n - pf*k + kc - 1) / kc
	cEnd := fStart.Add(-fine)
	return []segment{{cEnd.Add(-time.Duration(pc-1) * coarse), coarse, pc, 0}, {fStart, fine, pf, pc}}
}

// bfQuery is one query of a backfill batch: its answer goes into slot,
// series of one VM combined by op ('+' sum, 'm' max, 0 one series).
type bfQuery struct {
	slot int
	op   byte
	q    string
}

// backfillQueries are the queries of a backfill batch. Net and disk each
// fill one slot with both directions: aggregated here when the templates
// allow (see outerAgg), else as one server-side sum (half the points to
// send), which matches the templates' per-VM labels one to one.
func (s *Source) backfillQueries(v vars) ([]bfQuery, error) {
	var out []bfQuery
	one := func(q int, t *template.Template) (string, error) {
		if t == nil {
			return "", nil
		}
		r, err := render(t, v)
		if err != nil {
			return "", fmt.Errorf("prometheus queries.%s: %w", queryField[q], err)
		}
		return r, nil
	}
	for _, pair := range [][]int{{qCPU}, {qMem}, {qNetRx, qNetTx}, {qDiskRd, qDiskWr}} {
		slot := pair[0]
		inner := true
		for _, q := range pair {
			inner = inner && (s.tmpl[q] == nil || s.inner[q] != nil)
		}
		if inner && (len(pair) == 1 || s.agg[pair[0]] == s.agg[pair[1]] || s.tmpl[pair[0]] == nil || s.tmpl[pair[1]] == nil) {
			for _, q := range pair {
				r, err := one(q, s.inner[q])
				if err != nil {
					return nil, err
				}
				if r != "" {
					out = append(out, bfQuery{slot, s.agg[q], r})
				}
			}
			continue
		}
		var parts []string
		for _, q := range pair {
			r, err := one(q, s.tmpl[q])
			if err != nil {
				return nil, err
			}
			if r != "" {
				parts = append(parts, r)
			}
		}
		switch len(parts) {
		case 1:
			out = append(out, bfQuery{slot, 0, parts[0]})
		case 2:
			out = append(out, bfQuery{slot, 0, "(" + parts[0] + ") + (" + parts[1] + ")"})
		}
	}
	return out, nil
}

func (s *Source) batch(ctx context.Context, hostIDs []string, segs []segment, hosts map[string][]string, fn func(Key, Points)) error {
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
	last := segs[len(segs)-1]
	total := last.off + last.n
	got := map[Key][]Reading{}
	vmName, hostName := s.cfg.VMLabel, s.cfg.HostLabel
	for _, sg := range segs {
		// rate() over the whole step: a point is the step's average.
		bqs, err := s.backfillQueries(s.vars(values, max(s.cfg.RateWindow, sg.step)))
		if err != nil {
			return err
		}
		startMs, stepMs := sg.start.UnixMilli(), sg.step.Milliseconds()
		for _, bq := range bqs {
			q, op, query := bq.slot, bq.op, bq.q
			sink := func(lbl map[string]string) func(int64, float64) {
				vm, h := lbl[vmName], lbl[hostName]
				if vm == "" || h == "" {
					return nil
				}
				k := Key{vm, s.cfg.hostID(h)}
				if !want[k] {
					return nil
				}
				rs := got[k]
				if rs == nil {
					rs = make([]Reading, total)
					for i := range rs {
						rs[i] = nanReading()
					}
					got[k] = rs
				}
				rs = rs[sg.off : sg.off+sg.n]
				return func(ms int64, v float64) {
					i := int((ms - startMs + stepMs/2) / stepMs)
					if i >= 0 && i < len(rs) && ms+stepMs/2 >= startMs {
						rs[i].combine(q, op, v)
					}
				}
			}
			// Long histories go in pieces of maxPoints.
			for off := 0; off < sg.n; off += maxPoints {
				m := min(maxPoints, sg.n-off)
				from := sg.start.Add(time.Duration(off) * sg.step)
				if err := s.rangeQuery(ctx, query, from, from.Add(time.Duration(m-1)*sg.step), sg.step, sink); err != nil {
					return fmt.Errorf("prometheus queries.%s (backfill): %w", queryField[q], err)
				}
			}
		}
	}
	p := Points{Start: segs[0].start, Step: last.step}
	if len(segs) > 1 {
		p.Coarse, p.CoarseStep = segs[0].n, segs[0].step
	}
	for k, rs := range got {
		p.R = rs
		fn(k, p)
	}
	return nil
}

// rangeQuery asks query_range and decodes the answer into sink.
func (s *Source) rangeQuery(ctx context.Context, q string, start, end time.Time, step time.Duration, sink matrixSink) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	form := url.Values{}
	form.Set("query", q)
	form.Set("start", formatTime(start))
	form.Set("end", formatTime(end))
	form.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	form.Set("timeout", promDuration(s.cfg.Timeout))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(s.cfg.URL, "/")+"/api/v1/query_range",
		strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	defer resp.Body.Close()
	buf, _ := s.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer s.bufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return fmt.Errorf("%s: reading the answer: %w", q, err)
	}
	if err := decodeMatrix(buf.Bytes(), sink); err != nil {
		var ae *apiError
		if errors.As(err, &ae) || resp.StatusCode/100 == 2 {
			return fmt.Errorf("%s: %w", q, err)
		}
		return fmt.Errorf("%s: HTTP %s", q, resp.Status)
	}
	return nil
}

func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1e3, 'f', -1, 64)
}
