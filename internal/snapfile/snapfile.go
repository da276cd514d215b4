// Package snapfile reads the hand-written cluster snapshots that `headroom plan`
// decides on: hosts and VMs by name, each VM with an optional forecast.
package snapfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"

	"github.com/headroom/headroom/internal/model"
)

// File is the on-disk form.
type File struct {
	Time     float64      `json:"time"`
	Interval float64      `json:"interval"`
	Hosts    []Host       `json:"hosts"`
	VMs      []VM         `json:"vms"`
	Rules    []model.Rule `json:"rules"`
}

// Host is one host; power is optional (11 watts figures at 0..100 % CPU).
type Host struct {
	ID       string            `json:"id"`
	Capacity model.Resources   `json:"capacity"`
	PEs      int               `json:"pes"`
	PEMIPS   float64           `json:"pe_mips"`
	Power    []float64         `json:"power"`
	Labels   map[string]string `json:"labels"`
}

// VM is one VM and where it runs.
type VM struct {
	ID            string          `json:"id"`
	Host          string          `json:"host"`
	Size          model.Resources `json:"size"`
	VCPU          int             `json:"vcpus"`
	Demand        model.Resources `json:"demand"`
	Group         string          `json:"group"`
	LastMigration float64         `json:"last_migration"`
	// MigrationSeconds is how long moving the VM takes; 0: memory over bandwidth.
	MigrationSeconds float64   `json:"migration_seconds"`
	MigratingTo      []string  `json:"migrating_to"`
	Forecast         *Forecast `json:"forecast"`
}

// Forecast gives each resource per future step: the point forecast and the upper
// bound at Confidence. CPU is required; memory (MB), network and disk (KB/s) are
// optional and, when given, cover the same steps.
type Forecast struct {
	CPU        []float64 `json:"cpu"`
	CPUUpper   []float64 `json:"cpu_upper"`
	Mem        []float64 `json:"mem"`
	MemUpper   []float64 `json:"mem_upper"`
	Net        []float64 `json:"net"`
	NetUpper   []float64 `json:"net_upper"`
	Disk       []float64 `json:"disk"`
	DiskUpper  []float64 `json:"disk_upper"`
	Confidence float64   `json:"confidence"`
}

// Load reads and checks a snapshot file.
func Load(path string) (*model.Snapshot, []model.ResourceForecast, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	s, f, err := Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, f, nil
}

// Parse converts a file into a snapshot and forecasts indexed like its VMs (nil when
// no VM has one). Errors name the field.
func Parse(b []byte) (*model.Snapshot, []model.ResourceForecast, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, nil, err
	}
	if f.Interval == 0 {
		f.Interval = 300
	}
	if f.Interval < 0 || math.IsNaN(f.Interval) || math.IsInf(f.Interval, 0) {
		return nil, nil, fmt.Errorf("interval: %g must be positive", f.Interval)
	}
	if len(f.Hosts) == 0 {
		return nil, nil, fmt.Errorf("hosts: none given")
	}
	s := &model.Snapshot{Time: f.Time, Interval: f.Interval, Rules: f.Rules}
	hostIx := map[string]int{}
	for i, h := range f.Hosts {
		if h.ID == "" {
			return nil, nil, fmt.Errorf("hosts[%d].id: empty", i)
		}
		if _, dup := hostIx[h.ID]; dup {
			return nil, nil, fmt.Errorf("hosts[%d].id: %q given twice", i, h.ID)
		}
		if !(h.Capacity.CPU > 0) || bad(h.Capacity) {
			return nil, nil, fmt.Errorf("hosts[%d].capacity: cpu must be positive and all values finite and not negative", i)
		}
		hostIx[h.ID] = i
		mh := model.Host{ID: h.ID, Capacity: h.Capacity, PEs: h.PEs, PEMIPS: h.PEMIPS, Labels: h.Labels}
		switch len(h.Power) {
		case 0:
		case 11:
			copy(mh.Power[:], h.Power)
		default:
			return nil, nil, fmt.Errorf("hosts[%d].power: %d values, want 11 (0, 10, ..., 100 %% CPU)", i, len(h.Power))
		}
		s.Hosts = append(s.Hosts, mh)
	}
	var fc []model.ResourceForecast
	vmIx := map[string]int{}
	for i, v := range f.VMs {
		if v.ID == "" {
			return nil, nil, fmt.Errorf("vms[%d].id: empty", i)
		}
		if _, dup := vmIx[v.ID]; dup {
			return nil, nil, fmt.Errorf("vms[%d].id: %q given twice", i, v.ID)
		}
		vmIx[v.ID] = i
		h, ok := hostIx[v.Host]
		if !ok {
			return nil, nil, fmt.Errorf("vms[%d].host: %q is not a host", i, v.Host)
		}
		if bad(v.Size) || bad(v.Demand) {
			return nil, nil, fmt.Errorf("vms[%d]: size and demand must be finite and not negative", i)
		}
		if !(v.MigrationSeconds >= 0) || math.IsInf(v.MigrationSeconds, 0) {
			return nil, nil, fmt.Errorf("vms[%d].migration_seconds: %v, want a finite number of seconds, not negative", i, v.MigrationSeconds)
		}
		mv := model.VM{ID: v.ID, Host: h, Size: v.Size, VCPU: max(v.VCPU, 1), Demand: v.Demand, Group: v.Group,
			LastMigration: v.LastMigration, MigrationSeconds: v.MigrationSeconds}
		for _, t := range v.MigratingTo {
			th, ok := hostIx[t]
			if !ok {
				return nil, nil, fmt.Errorf("vms[%d].migrating_to: %q is not a host", i, t)
			}
			mv.MigratingTo = append(mv.MigratingTo, th)
			s.Hosts[th].VMs = append(s.Hosts[th].VMs, i)
		}
		s.VMs = append(s.VMs, mv)
		s.Hosts[h].VMs = append(s.Hosts[h].VMs, i)
		if v.Forecast != nil {
			p := v.Forecast
			if len(p.CPU) == 0 || len(p.CPUUpper) != len(p.CPU) {
				return nil, nil, fmt.Errorf("vms[%d].forecast: cpu has %d steps, cpu_upper %d; they must match and not be empty", i, len(p.CPU), len(p.CPUUpper))
			}
			if p.Confidence <= 0 || p.Confidence >= 1 {
				return nil, nil, fmt.Errorf("vms[%d].forecast.confidence: %g must be in (0, 1)", i, p.Confidence)
			}
			for k := range p.CPU {
				if !finite(p.CPU[k]) || !finite(p.CPUUpper[k]) || p.CPUUpper[k] < p.CPU[k] {
					return nil, nil, fmt.Errorf("vms[%d].forecast: step %d: upper %g below point %g or not finite", i, k+1, p.CPUUpper[k], p.CPU[k])
				}
			}
			if fc == nil {
				fc = make([]model.ResourceForecast, len(f.VMs))
			}
			up := make([]model.Resources, len(p.CPU))
			for k := range up {
				up[k].CPU = p.CPUUpper[k]
			}
			rf := model.ResourceForecast{VMInstanceID: v.ID, Step: f.Interval, PredictedCPU: p.CPU, Upper: up, Confidence: p.Confidence}
			for _, o := range []struct {
				name      string
				r         model.Resource
				pt, upper []float64
				dst       *[]float64
			}{
				{"mem", model.Mem, p.Mem, p.MemUpper, &rf.PredictedMemory},
				{"net", model.Net, p.Net, p.NetUpper, &rf.PredictedNetworkIO},
				{"disk", model.Disk, p.Disk, p.DiskUpper, &rf.PredictedDiskIO},
			} {
				if len(o.pt) == 0 && len(o.upper) == 0 {
					continue
				}
				if len(o.pt) != len(p.CPU) || len(o.upper) != len(p.CPU) {
					return nil, nil, fmt.Errorf("vms[%d].forecast: %s has %d steps, %s_upper %d; both must match cpu's %d", i, o.name, len(o.pt), o.name, len(o.upper), len(p.CPU))
				}
				for k := range o.pt {
					if !finite(o.pt[k]) || !finite(o.upper[k]) || o.upper[k] < o.pt[k] {
						return nil, nil, fmt.Errorf("vms[%d].forecast: %s step %d: upper %g below point %g or not finite", i, o.name, k+1, o.upper[k], o.pt[k])
					}
					up[k].Set(o.r, o.upper[k])
				}
				*o.dst = o.pt
			}
			fc[i] = rf
		}
	}
	for h := range s.Hosts {
		u := 0.0
		for _, v := range s.Hosts[h].VMs {
			if s.VMs[v].Host == h {
				u += s.VMs[v].Demand.CPU
			}
		}
		s.Hosts[h].Util = u / s.Hosts[h].Capacity.CPU
	}
	return s, fc, nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func bad(r model.Resources) bool {
	for _, x := range []float64{r.CPU, r.Mem, r.Net, r.Disk} {
		if !finite(x) || x < 0 {
			return true
		}
	}
	return false
}
