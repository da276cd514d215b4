package metrics

import (
	"sort"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/model"
)

type hostPoint struct {
	T int64                   `json:"t"` // Unix ms
	R map[string]HostForecast `json:"r"` // by resource
}

type hostHist struct{ points []hostPoint }

type vmPoint struct {
	T      int64           `json:"t"`
	Demand model.Resources `json:"demand"`
	// Mean and Upper are the one-step-ahead forecast made at T, for T + interval.
	Mean  model.Resources `json:"mean"`
	Upper model.Resources `json:"upper"`
}

type vmHist struct {
	host     string
	size     model.Resources
	points   []vmPoint
	forecast *model.ResourceForecast
}

// HostView is one host for the dashboard: its history, one point per cycle, each
// with that cycle's forecast path.
type HostView struct {
	ID     string      `json:"id"`
	Up     bool        `json:"up"`
	VMs    []string    `json:"vms"`
	Points []hostPoint `json:"points"`
}

// State is the last cycle as the dashboard shows it.
type State struct {
	Mode       string     `json:"mode"`
	Interval   float64    `json:"interval_seconds"`
	Confidence float64    `json:"confidence"`
	LastCycle  time.Time  `json:"last_cycle"`
	Hosts      []HostView `json:"hosts"`
	Quality    []Quality  `json:"forecast_quality"`
}

// State returns the hosts' histories and the forecast quality. With points=false
// it returns only each host's latest point.
func (o *Observer) State(points bool) State {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := State{Mode: string(o.c.CurrentMode()), Interval: o.c.Interval().Seconds(), Confidence: o.c.Confidence(),
		LastCycle: o.lastAt, Hosts: []HostView{}, Quality: []Quality{}}
	on := map[string][]string{}
	up := map[string]bool{}
	if s := o.last.Snapshot; s != nil {
		for _, h := range s.Hosts {
			up[h.ID] = true
		}
		for _, v := range s.VMs {
			if v.Host >= 0 && v.Host < len(s.Hosts) {
				on[s.Hosts[v.Host].ID] = append(on[s.Hosts[v.Host].ID], v.ID)
			}
		}
	}
	for _, id := range o.c.HostIDs() {
		hv := HostView{ID: id, Up: up[id], VMs: on[id], Points: []hostPoint{}}
		if hv.VMs == nil {
			hv.VMs = []string{}
		}
		if hh := o.hosts[id]; hh != nil && len(hh.points) > 0 {
			if points {
				hv.Points = append(hv.Points, hh.points...)
			} else {
				hv.Points = append(hv.Points, hh.points[len(hh.points)-1])
			}
		}
		st.Hosts = append(st.Hosts, hv)
	}
	for _, r := range o.res {
		if q := o.quality.summary(r); q.N > 0 {
			st.Quality = append(st.Quality, q)
		}
	}
	return st
}

// VMSummary is one VM in the dashboard's list.
type VMSummary struct {
	ID     string          `json:"id"`
	Host   string          `json:"host"`
	Demand model.Resources `json:"demand"`
	Size   model.Resources `json:"size"`
}

// VMs lists the VMs of the last cycle by ID.
func (o *Observer) VMs() []VMSummary {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []VMSummary{}
	for id, vh := range o.vms {
		s := VMSummary{ID: id, Host: vh.host, Size: vh.size}
		if n := len(vh.points); n > 0 {
			s.Demand = vh.points[n-1].Demand
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// VMView is one VM's actuals against its forecasts.
type VMView struct {
	VMSummary
	Points []vmPoint `json:"points"`
	// Forecast is the latest full forecast (every step), nil without one.
	Forecast *model.ResourceForecast `json:"forecast"`
	Interval float64                 `json:"interval_seconds"`
}

// VM returns one VM's history, false if the last cycle did not see it.
func (o *Observer) VM(id string) (VMView, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	vh, ok := o.vms[id]
	if !ok {
		return VMView{}, false
	}
	v := VMView{VMSummary: VMSummary{ID: id, Host: vh.host, Size: vh.size}, Points: append([]vmPoint{}, vh.points...),
		Forecast: vh.forecast, Interval: o.c.Interval().Seconds()}
	if n := len(vh.points); n > 0 {
		v.Demand = vh.points[n-1].Demand
	}
	return v, true
}

// Last is the last cycle observed and when, false before the first.
func (o *Observer) Last() (controller.Cycle, time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last, o.lastAt, o.last.Snapshot != nil
}
