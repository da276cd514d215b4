// Package metrics watches the live controller from the edge: it takes every cycle
// (snapshot, forecasts, plan) from Run's callback and the migrations from the event
// log, exports them to Prometheus, keeps the short history the dashboard draws, and
// scores the forecasts online against the demand that came.
package metrics

import (
	"math"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
	"github.com/headroom/headroom/internal/store"
)

// Options tune the observer.
type Options struct {
	// PerVM exports per-VM series while the fleet has at most this many VMs (0: never).
	PerVM int
	// Window is how many cycles the forecast quality covers (default 60).
	Window int
	// History is how many cycles the dashboard's charts keep (default 240).
	History int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Observer turns cycles and events into metrics and dashboard history. Safe for
// concurrent use.
type Observer struct {
	c   *controller.Controller
	log *store.Log
	opt Options
	reg *prometheus.Registry

	mu       sync.Mutex
	last     controller.Cycle
	lastAt   time.Time
	lastEnd  time.Time
	hosts    map[string]*hostHist
	vms      map[string]*vmHist
	lastSeen map[string]time.Time // host -> last cycle it answered
	quality  *quality
	seq      uint64            // newest event counted
	since    time.Time         // its time
	reasons  map[string]string // VM -> rule of its latest decision
	res      []model.Resource  // the resources the last cycle tracked

	hostDemand, hostMean, hostUpper, hostCap, hostProb *prometheus.GaugeVec
	vmDemand, vmUpper                                  *prometheus.GaugeVec
	vmGuard                                            prometheus.Gauge
	horizon                                            prometheus.Gauge
	migrations                                         *prometheus.CounterVec
	migDuration, migDowntime, migError                 prometheus.Histogram
	cycleDuration                                      prometheus.Histogram
	cycles                                             *prometheus.CounterVec
	sourceUp                                           *prometheus.GaugeVec
	mode                                               *prometheus.GaugeVec
	coverage, stated, samples                          *prometheus.GaugeVec
	mae                                                *prometheus.GaugeVec
}

// Forecasters named in the MAE metric.
const (
	ModelHeadroom = "headroom"
	ModelMean12   = "mean_of_last_12"
)

// New builds an observer of c and its event log. Migrations already in the log
// are not counted: counters start at zero with the process.
func New(c *controller.Controller, log *store.Log, opt Options) *Observer {
	if opt.Window <= 0 {
		opt.Window = 60
	}
	if opt.History <= 0 {
		opt.History = 240
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	o := &Observer{c: c, log: log, opt: opt, reg: prometheus.NewRegistry(),
		hosts: map[string]*hostHist{}, vms: map[string]*vmHist{}, lastSeen: map[string]time.Time{},
		quality: newQuality(opt.Window), reasons: map[string]string{}}
	if es, err := log.List(store.Filter{Limit: 1}); err == nil && len(es) > 0 {
		o.seq, o.since = es[0].Seq, es[0].Time
	}
	hr := []string{"host", "resource"}
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		o.reg.MustRegister(v)
		return v
	}
	o.hostDemand = g("headroom_host_demand", "Demand of the VMs running on the host now, in the resource's unit (cpu: MHz, mem: MiB, net and disk: KB/s).", hr...)
	o.hostMean = g("headroom_host_forecast_mean", "Forecast mean demand of the host's VMs at the horizon.", hr...)
	o.hostUpper = g("headroom_host_forecast_upper", "Upper bound of the host's forecast demand at the horizon, at the policy's confidence.", hr...)
	o.hostCap = g("headroom_host_capacity", "Host capacity in the resource's unit.", hr...)
	o.hostProb = g("headroom_host_overload_probability", "Probability that the host's demand exceeds its capacity within the forecast horizon (0..1).", hr...)
	o.vmDemand = g("headroom_vm_demand", "A VM's demand now (only while the fleet is within api.per_vm_metrics VMs).", "vm", "resource")
	o.vmUpper = g("headroom_vm_forecast_upper", "Upper bound of a VM's forecast at the horizon (only while the fleet is within api.per_vm_metrics VMs).", "vm", "resource")
	o.vmGuard = prometheus.NewGauge(prometheus.GaugeOpts{Name: "headroom_vm_series_suppressed", Help: "1 when per-VM series are off because the fleet has more VMs than api.per_vm_metrics."})
	o.horizon = prometheus.NewGauge(prometheus.GaugeOpts{Name: "headroom_forecast_horizon_seconds", Help: "How far ahead the host forecasts look."})
	o.migrations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "headroom_migrations_total", Help: "Migrations ended or refused, by result (completed, failed, cancelled, refused, ...) and by the rule that asked for them."}, []string{"result", "reason"})
	o.migDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "headroom_migration_duration_seconds", Help: "Measured duration of ended migrations.", Buckets: prometheus.ExponentialBuckets(0.25, 2, 12)})
	o.migDowntime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "headroom_migration_downtime_seconds", Help: "Measured downtime of completed migrations.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	o.migError = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "headroom_migration_duration_prediction_error_seconds", Help: "Predicted minus measured duration of completed migrations (negative: slower than predicted).", Buckets: []float64{-120, -60, -30, -10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10, 30, 60, 120}})
	o.cycleDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "headroom_cycle_duration_seconds", Help: "Time one decision cycle took: observe, forecast, decide, act.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)})
	o.cycles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "headroom_cycles_total", Help: "Decision cycles run, by result (ok or error)."}, []string{"result"})
	o.sourceUp = g("headroom_source_up", "1 if the host answered the last cycle's stats, else 0.", "host")
	o.mode = g("headroom_mode", "1 for the mode the controller runs in.", "mode")
	o.coverage = g("headroom_forecast_coverage_ratio", "Share of one-step-ahead forecasts whose upper bound covered the demand that came, over the rolling window.", "resource")
	o.stated = g("headroom_forecast_stated_coverage_ratio", "The coverage the forecasts' upper bound claims (the policy's confidence).", "resource")
	o.samples = g("headroom_forecast_scored_samples", "VM forecasts scored in the rolling window.", "resource")
	o.mae = g("headroom_forecast_mean_absolute_error", "Mean absolute error of one-step-ahead forecasts over the rolling window, in the resource's unit, for headroom's forecaster and the mean-of-last-12 baseline.", "resource", "model")
	o.reg.MustRegister(o.vmGuard, o.horizon, o.migrations, o.migDuration, o.migDowntime, o.migError, o.cycleDuration, o.cycles,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_migrations_in_flight", Help: "Migrations running now."}, func() float64 { return float64(len(c.Moves())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "headroom_pending_approvals", Help: "Moves awaiting an operator's approval."}, func() float64 { return float64(len(c.Pending())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "headroom_event_log_write_errors_total", Help: "Events the controller failed to write to its event log."}, func() float64 { return float64(controller.EventLogErrors()) }),
		&staleness{o},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"completed", "failed"} {
		o.migrations.WithLabelValues(r, "overload") // present from the start, at 0
	}
	for _, m := range []controller.Mode{controller.DryRun, controller.Approve, controller.Auto} {
		o.mode.WithLabelValues(string(m))
	}
	o.setMode()
	return o
}

// Registry is where the metrics live.
func (o *Observer) Registry() *prometheus.Registry { return o.reg }

// Handler serves /metrics, counting the migrations logged since the last scrape first.
func (o *Observer) Handler() http.Handler {
	h := promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.syncEvents()
		o.setMode()
		o.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// Wrap returns an onCycle for controller.Run: it observes each cycle, applies a
// mode an operator set (between cycles), then calls next (which may be nil).
func (o *Observer) Wrap(next func(controller.Cycle, error)) func(controller.Cycle, error) {
	return func(cy controller.Cycle, err error) {
		o.Observe(cy, err)
		o.c.ApplyMode()
		if next != nil {
			next(cy, err)
		}
	}
}

func (o *Observer) setMode() {
	cur := o.c.CurrentMode()
	for _, m := range []controller.Mode{controller.DryRun, controller.Approve, controller.Auto} {
		v := 0.0
		if m == cur {
			v = 1
		}
		o.mode.WithLabelValues(string(m)).Set(v)
	}
}

// Observe takes one cycle. The cycle's duration is measured from the end of the
// previous one plus the interval (Run waits an interval between them).
func (o *Observer) Observe(cy controller.Cycle, err error) {
	now := o.opt.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.lastEnd.IsZero() {
		if d := now.Sub(o.lastEnd) - o.c.Interval(); d >= 0 {
			o.cycleDuration.Observe(d.Seconds())
		}
	}
	o.lastEnd = now
	defer o.syncEvents()
	if err != nil || cy.Snapshot == nil {
		o.cycles.WithLabelValues("error").Inc()
		return
	}
	o.cycles.WithLabelValues("ok").Inc()
	o.last, o.lastAt = cy, now
	snap := cy.Snapshot
	up := map[string]bool{}
	for _, h := range snap.Hosts {
		up[h.ID] = true
		o.lastSeen[h.ID] = now
	}
	for _, id := range o.c.HostIDs() {
		v := 0.0
		if up[id] {
			v = 1
		}
		o.sourceUp.WithLabelValues(id).Set(v)
	}
	conf := o.c.Confidence()
	o.hostGauges(cy, now, conf)
	o.vmSeries(cy, now)
	o.quality.observe(cy)
	o.res = tracked(snap)
	for _, r := range o.res {
		q := o.quality.summary(r)
		if q.N == 0 {
			continue
		}
		rs := r.String()
		o.coverage.WithLabelValues(rs).Set(q.Coverage)
		o.stated.WithLabelValues(rs).Set(conf)
		o.samples.WithLabelValues(rs).Set(float64(q.N))
		o.mae.WithLabelValues(rs, ModelHeadroom).Set(q.MAE)
		o.mae.WithLabelValues(rs, ModelMean12).Set(q.BaselineMAE)
	}
}

// tracked are the resources worth a series: those with a capacity or a demand.
func tracked(snap *model.Snapshot) []model.Resource {
	var out []model.Resource
	for _, r := range model.AllResources {
		if r == model.CPU || r == model.Mem {
			out = append(out, r)
			continue
		}
		for _, h := range snap.Hosts {
			if h.Capacity.Get(r) > 0 {
				out = append(out, r)
				break
			}
		}
		if len(out) > 0 && out[len(out)-1] == r {
			continue
		}
		for _, v := range snap.VMs {
			if v.Demand.Get(r) > 0 {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// HostForecast is one host's demand and forecast for one resource.
type HostForecast struct {
	Demand   float64   `json:"demand"`
	Capacity float64   `json:"capacity"`
	Mean     []float64 `json:"mean"`  // per forecast step
	Upper    []float64 `json:"upper"` // per forecast step
	// Prob is P(demand > capacity) at the riskiest step (0 without a capacity).
	Prob float64 `json:"overload_probability"`
}

// hostForecast sums the forecasts of the VMs running on host h as independent
// normals, each VM's spread read from its upper bound as the core reads it.
func hostForecast(cy controller.Cycle, h int, r model.Resource, z float64) HostForecast {
	snap := cy.Snapshot
	out := HostForecast{Capacity: snap.Hosts[h].Capacity.Get(r)}
	steps := -1
	for i := range cy.Forecasts {
		if i < len(snap.VMs) && snap.VMs[i].Host == h {
			if n := cy.Forecasts[i].Horizon(); steps < 0 || n < steps {
				steps = n
			}
		}
	}
	steps = max(steps, 0)
	mean := make([]float64, steps)
	variance := make([]float64, steps)
	for i, v := range snap.VMs {
		if v.Host != h {
			continue
		}
		d := v.Demand.Get(r)
		out.Demand += d
		if i >= len(cy.Forecasts) {
			for s := range mean {
				mean[s] += d
			}
			continue
		}
		f := &cy.Forecasts[i]
		for s := range mean {
			mu := f.Point(s).Get(r)
			mean[s] += mu
			if s < len(f.Upper) && z > 0 {
				if sd := (f.Upper[s].Get(r) - mu) / z; sd > 0 {
					variance[s] += sd * sd
				}
			}
		}
	}
	out.Mean, out.Upper = mean, make([]float64, steps)
	for s := range mean {
		sd := math.Sqrt(variance[s])
		out.Upper[s] = mean[s] + z*sd
		if out.Capacity > 0 {
			out.Prob = max(out.Prob, policy.ProbAbove(mean[s], sd, out.Capacity))
		}
	}
	if steps == 0 && out.Capacity > 0 && out.Demand > out.Capacity {
		out.Prob = 1
	}
	return out
}

func zOf(conf float64) float64 {
	if conf <= 0 || conf >= 1 {
		return 0
	}
	return policy.Z(conf)
}

func (o *Observer) hostGauges(cy controller.Cycle, now time.Time, conf float64) {
	snap := cy.Snapshot
	z := zOf(conf)
	res := tracked(snap)
	o.hostDemand.Reset()
	o.hostMean.Reset()
	o.hostUpper.Reset()
	o.hostCap.Reset()
	o.hostProb.Reset()
	steps := 0
	for h := range snap.Hosts {
		id := snap.Hosts[h].ID
		hh := o.hosts[id]
		if hh == nil {
			hh = &hostHist{}
			o.hosts[id] = hh
		}
		p := hostPoint{T: now.UnixMilli(), R: map[string]HostForecast{}}
		for _, r := range res {
			f := hostForecast(cy, h, r, z)
			steps = max(steps, len(f.Mean))
			rs := r.String()
			p.R[rs] = f
			o.hostDemand.WithLabelValues(id, rs).Set(f.Demand)
			if n := len(f.Mean); n > 0 {
				o.hostMean.WithLabelValues(id, rs).Set(f.Mean[n-1])
				o.hostUpper.WithLabelValues(id, rs).Set(f.Upper[n-1])
			} else {
				o.hostMean.WithLabelValues(id, rs).Set(f.Demand)
				o.hostUpper.WithLabelValues(id, rs).Set(f.Demand)
			}
			if f.Capacity > 0 {
				o.hostCap.WithLabelValues(id, rs).Set(f.Capacity)
				o.hostProb.WithLabelValues(id, rs).Set(f.Prob)
			}
		}
		hh.points = append(hh.points, p)
		if len(hh.points) > o.opt.History {
			hh.points = slices.Delete(hh.points, 0, len(hh.points)-o.opt.History)
		}
	}
	o.horizon.Set(float64(steps) * snap.Interval)
}

func (o *Observer) vmSeries(cy controller.Cycle, now time.Time) {
	snap := cy.Snapshot
	o.vmDemand.Reset()
	o.vmUpper.Reset()
	perVM := o.opt.PerVM > 0 && len(snap.VMs) <= o.opt.PerVM
	if perVM || o.opt.PerVM == 0 {
		o.vmGuard.Set(0)
	} else {
		o.vmGuard.Set(1)
	}
	seen := map[string]bool{}
	for i, v := range snap.VMs {
		seen[v.ID] = true
		vh := o.vms[v.ID]
		if vh == nil {
			vh = &vmHist{}
			o.vms[v.ID] = vh
		}
		host := ""
		if v.Host >= 0 && v.Host < len(snap.Hosts) {
			host = snap.Hosts[v.Host].ID
		}
		vh.host, vh.size = host, v.Size
		p := vmPoint{T: now.UnixMilli(), Demand: v.Demand}
		if i < len(cy.Forecasts) {
			f := &cy.Forecasts[i]
			vh.forecast = f
			if f.Horizon() > 0 {
				p.Mean, p.Upper = f.Point(0), f.Upper[0]
			}
		} else {
			vh.forecast = nil
		}
		vh.points = append(vh.points, p)
		if len(vh.points) > o.opt.History {
			vh.points = slices.Delete(vh.points, 0, len(vh.points)-o.opt.History)
		}
		if perVM {
			for _, r := range []model.Resource{model.CPU, model.Mem} {
				o.vmDemand.WithLabelValues(v.ID, r.String()).Set(v.Demand.Get(r))
				if vh.forecast != nil && vh.forecast.Horizon() > 0 {
					n := vh.forecast.Horizon()
					o.vmUpper.WithLabelValues(v.ID, r.String()).Set(vh.forecast.Upper[n-1].Get(r))
				}
			}
		}
	}
	for id := range o.vms {
		if !seen[id] {
			delete(o.vms, id)
		}
	}
}

// syncEvents counts the migrations logged since the last call. o.mu held.
func (o *Observer) syncEvents() {
	es, err := o.log.List(store.Filter{Since: o.since})
	if err != nil {
		return
	}
	for _, e := range es {
		if e.Seq <= o.seq {
			continue
		}
		o.seq, o.since = e.Seq, e.Time
		switch {
		case e.Kind == store.Decision && e.Reason != nil:
			o.reasons[e.VM] = e.Reason.Rule
		case e.Kind == store.MigrationEnd:
			state := e.State
			if state == "" {
				state = "unknown"
			}
			o.migrations.WithLabelValues(state, o.reason(e.VM)).Inc()
			if e.Seconds > 0 {
				o.migDuration.Observe(e.Seconds)
			}
			if state == "completed" {
				o.migDowntime.Observe(e.DowntimeMs / 1000)
				if e.Options != nil && e.Options.PredictedSeconds > 0 && e.Seconds > 0 {
					o.migError.Observe(e.Options.PredictedSeconds - e.Seconds)
				}
			}
		case e.Kind == store.Failure && e.Message == "migration refused":
			o.migrations.WithLabelValues("refused", o.reason(e.VM)).Inc()
		}
	}
}

// reason is the rule behind vm's latest decision, from a small fixed set so the
// label stays bounded.
func (o *Observer) reason(vm string) string {
	switch r := o.reasons[vm]; r {
	case "overload", "underload", "drain", "consolidate":
		return r
	case "":
		return "unknown"
	default:
		return "other"
	}
}

// staleness exports each host's seconds since it last answered, at scrape time.
type staleness struct{ o *Observer }

var stalenessDesc = prometheus.NewDesc("headroom_source_staleness_seconds", "Seconds since the host's stats last arrived in a cycle.", []string{"host"}, nil)

func (s *staleness) Describe(ch chan<- *prometheus.Desc) { ch <- stalenessDesc }

func (s *staleness) Collect(ch chan<- prometheus.Metric) {
	s.o.mu.Lock()
	now := s.o.opt.Now()
	ids := s.o.c.HostIDs()
	seen := map[string]time.Time{}
	for _, id := range ids {
		if t, ok := s.o.lastSeen[id]; ok {
			seen[id] = t
		}
	}
	s.o.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		t, ok := seen[id]
		if !ok {
			continue // no cycle yet: no sample to be stale
		}
		ch <- prometheus.MustNewConstMetric(stalenessDesc, prometheus.GaugeValue, now.Sub(t).Seconds(), id)
	}
}
