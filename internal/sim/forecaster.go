package sim

import (
	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/model"
)

// forecaster supplies a policy's forecasts each interval: nothing for CloudSim's
// policies, the prediction engine fed the VMs' measured demand for headroom, and the
// true future demand for the oracle.
type forecaster struct {
	e      *engine
	steps  int
	conf   float64
	oracle bool
	eng    *forecast.Engine
	vms    []*forecast.VM
	out    []model.ResourceForecast
	// past holds the oracle's last week of each VM's demand (a ring; n counts its
	// samples), so that its Peak reads the past as the engine's does.
	past [][]model.Resources
	n    []int
}

func newForecaster(pol core.Policy, e *engine, cfg Config) (*forecaster, error) {
	f := &forecaster{e: e}
	fp, ok := pol.(core.Forecasting)
	if !ok {
		return f, nil
	}
	f.steps = fp.HorizonSteps(cfg.Interval)
	f.conf = fp.Confidence()
	f.oracle = pol.Name() == "oracle"
	f.out = make([]model.ResourceForecast, len(e.snap.VMs))
	if f.oracle {
		for v := range f.out {
			f.out[v] = model.ResourceForecast{VMInstanceID: e.snap.VMs[v].ID, Step: cfg.Interval, Confidence: f.conf,
				PredictedCPU: make([]float64, f.steps), Upper: make([]model.Resources, f.steps)}
			if cfg.MultiResource {
				o := &f.out[v]
				o.PredictedMemory, o.PredictedNetworkIO, o.PredictedDiskIO = make([]float64, f.steps), make([]float64, f.steps), make([]float64, f.steps)
			}
		}
		week := max(int(7*86400/cfg.Interval), 1)
		f.past, f.n = make([][]model.Resources, len(f.out)), make([]int, len(f.out))
		for v := range f.past {
			f.past[v] = make([]model.Resources, 0, week)
		}
		return f, nil
	}
	eng, err := forecast.NewEngine(forecast.Config{Step: cfg.Interval, Horizon: f.steps})
	if err != nil {
		return nil, err
	}
	f.eng = eng
	f.vms = make([]*forecast.VM, len(e.snap.VMs))
	for v := range f.vms {
		f.vms[v] = eng.VM(e.snap.VMs[v].ID)
	}
	return f, nil
}

// forecast returns forecasts for the decision at t (after the update at t), or nil.
func (f *forecaster) forecast(t float64) []model.ResourceForecast {
	if f.out == nil {
		return nil
	}
	vms := f.e.snap.VMs
	for v := range vms {
		if vms[v].Host < 0 {
			if f.eng != nil && f.vms[v] != nil {
				f.eng.Remove(vms[v].ID)
				f.vms[v] = nil
			}
			f.out[v] = model.ResourceForecast{}
			continue
		}
		if f.oracle {
			o := &f.out[v]
			o.Peak = f.remember(v, vms[v].Demand)
			for s := range f.steps {
				at := t + float64(s+1)*f.e.cfg.Interval
				if f.e.cfg.MultiResource {
					d := f.e.demandAt(v, at)
					o.PredictedCPU[s], o.PredictedMemory[s], o.PredictedNetworkIO[s], o.PredictedDiskIO[s] = d.CPU, d.Mem, d.Net, d.Disk
					o.Upper[s] = d
					continue
				}
				d := f.e.demand(v, at)
				o.PredictedCPU[s] = d
				o.Upper[s] = model.Resources{CPU: d}
			}
			continue
		}
		if f.e.cfg.MultiResource {
			f.vms[v].ObserveAll(vms[v].Demand)
		} else {
			f.vms[v].Observe(model.CPU, vms[v].Demand.CPU)
		}
		// Into last interval's forecast: its slices are reused, as the decision
		// that read them is over (each cycle builds its state anew).
		o := &f.out[v]
		f.vms[v].AppendForecast(o, f.steps, f.conf)
		o.Clamp(vms[v].Size)
	}
	return f.out
}

// remember adds v's demand now to its last week and returns that week's peak.
func (f *forecaster) remember(v int, d model.Resources) model.Resources {
	p := f.past[v]
	if len(p) < cap(p) {
		p = append(p, d)
		f.past[v] = p
	} else {
		p[f.n[v]%len(p)] = d
	}
	f.n[v]++
	var m model.Resources
	for _, x := range p {
		m = model.Resources{CPU: max(m.CPU, x.CPU), Mem: max(m.Mem, x.Mem), Net: max(m.Net, x.Net), Disk: max(m.Disk, x.Disk)}
	}
	return m
}
