package policy

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/headroom/headroom/internal/model"
)

// HeadroomConfig is the proactive policy's configuration, read from YAML. Every field
// has a default (DefaultHeadroom); a file only names what it changes.
type HeadroomConfig struct {
	// Horizon is how far ahead forecasts look.
	Horizon time.Duration `yaml:"horizon"`
	// Confidence is the level of the upper bounds used to check that a host has room.
	Confidence float64 `yaml:"confidence"`

	// Resources names the resources decisions read: triggers, the VM choice and the
	// horizon-wide placement check. Default: all four; [cpu] is the CPU-only policy
	// (memory, network and disk then count only at their current need, on placement).
	Resources []string `yaml:"resources"`
	// Overload is the trigger of every resource without its own in OverloadByResource.
	Overload OverloadTrigger `yaml:"overload"`
	// OverloadByResource gives a resource (cpu, mem, net, disk) its own trigger.
	OverloadByResource map[string]OverloadTrigger `yaml:"overload_by_resource"`
	Underload          UnderloadTrigger           `yaml:"underload"`
	LeadTime           LeadTime                   `yaml:"lead_time"`
	Thrash             AntiThrash                 `yaml:"anti_thrash"`
	Placement          PlacementConfig            `yaml:"placement"`
	// Groups override the triggers for VMs whose Group matches the key.
	Groups map[string]GroupConfig `yaml:"groups"`
}

// OverloadTrigger: migrate off a host if P(host demand > Threshold x capacity at some
// step within the horizon) >= Probability.
type OverloadTrigger struct {
	Threshold   float64 `yaml:"threshold"`
	Probability float64 `yaml:"probability"`
}

// UnderloadTrigger: empty a host whose predicted utilisation stays below Threshold if
// all its VMs fit elsewhere, each with probability >= Probability, for the horizon.
type UnderloadTrigger struct {
	Enabled     bool    `yaml:"enabled"`
	Threshold   float64 `yaml:"threshold"`
	Probability float64 `yaml:"probability"`
	// RoomForPeaks: a consolidation target must also have room for any one of
	// its VMs to return to its peak of the last week. Consolidation is optional work,
	// so it takes no risk a VM has already shown; off trades that for energy.
	RoomForPeaks bool `yaml:"room_for_peaks"`
	// Scorers, when given, rank consolidation's targets in place of
	// placement.scorers (the filters stay placement's). Consolidation is optional
	// work done for energy alone, so an operator may rank its targets by fit alone,
	// e.g. [{packing, 1}, {affinity, 1}], leaving room and link sharing
	// (headroom, migration-cost) to overload relief. Default: none, which is
	// placement.scorers.
	Scorers []WeightedStep `yaml:"scorers"`
}

// LeadTime: act on a predicted breach only when waiting for the next cycle would let
// the migration (its predicted duration plus Margin) end after the breach.
type LeadTime struct {
	Margin time.Duration `yaml:"margin"`
}

// AntiThrash bounds churn: a VM moved less than Cooldown ago stays unless its host is
// overloaded now; at most MaxPerCycle moves per cycle; a consolidation must save more
// energy than its moves cost, a move costing CostJoulesPerMB for each MB of the VM's
// memory plus CostWatts for its duration.
type AntiThrash struct {
	Cooldown    time.Duration `yaml:"cooldown"`
	MaxPerCycle int           `yaml:"max_per_cycle"`
	CostWatts   float64       `yaml:"cost_watts"`
	// CostJoulesPerMB is charged for every MB of a moved VM's memory, which a
	// live migration copies at least once (energy of both hosts and the link).
	CostJoulesPerMB float64 `yaml:"cost_joules_per_mb"`
	// RoomForCooldown asks a move's target for room over the whole cooldown, not
	// only the horizon. Off by default: forecasting that far changed when the
	// live controller acted on a recurring peak (TestPredictedPeakWithoutLab).
	RoomForCooldown bool `yaml:"room_for_cooldown"`
}

// PlacementConfig names the placement steps and their weights, in the manner of the
// Kubernetes scheduler framework.
type PlacementConfig struct {
	// Target is the share of capacity a host may be filled to at the upper bound.
	Target float64 `yaml:"target"`
	// Fill overrides, per resource, the share of capacity a host may be filled to
	// at the bound (default: Target x the resource's trigger threshold, at most
	// Target, so placement never fills a host to where its trigger would act).
	Fill map[string]float64 `yaml:"fill"`
	// PreferRoomForPeaks: overload relief takes a target that also has room for
	// any one of its VMs to return to its peak of the last week (the consolidation
	// rule) when one exists, and the bound alone only when none does.
	PreferRoomForPeaks bool `yaml:"prefer_room_for_peaks"`
	// MemoryPeaksTogether: wherever a peak rule applies (room_for_peaks,
	// prefer_room_for_peaks), memory counts every VM's return to its peak at
	// once (the sum of their excesses over their need now), not only any one.
	// Memory is not shared out past capacity, and VMs of one application grow
	// their memory together.
	MemoryPeaksTogether bool           `yaml:"memory_peaks_together"`
	Filters             []string       `yaml:"filters"`
	Scorers             []WeightedStep `yaml:"scorers"`
}

// WeightedStep is a scorer and its weight.
type WeightedStep struct {
	Name   string  `yaml:"name"`
	Weight float64 `yaml:"weight"`
}

// GroupConfig overrides the triggers for one VM group: Overload for every resource
// without its own entry in OverloadByResource.
type GroupConfig struct {
	Overload           *OverloadTrigger           `yaml:"overload"`
	OverloadByResource map[string]OverloadTrigger `yaml:"overload_by_resource"`
	AllowPostCopy      bool                       `yaml:"allow_post_copy"`
}

// ResourceList is the Resources field as model resources, in the order given.
func (c *HeadroomConfig) ResourceList() []model.Resource {
	out := make([]model.Resource, 0, len(c.Resources))
	for _, n := range c.Resources {
		if r, ok := ParseResource(n); ok {
			out = append(out, r)
		}
	}
	return out
}

// Trigger is resource r's overload trigger, before any group's.
func (c *HeadroomConfig) Trigger(r model.Resource) OverloadTrigger {
	if t, ok := c.OverloadByResource[r.String()]; ok {
		return t
	}
	return c.Overload
}

// GroupTrigger is group g's trigger for r, if g sets one.
func (g *GroupConfig) GroupTrigger(r model.Resource) (OverloadTrigger, bool) {
	if t, ok := g.OverloadByResource[r.String()]; ok {
		return t, true
	}
	if g.Overload != nil {
		return *g.Overload, true
	}
	return OverloadTrigger{}, false
}

// Stricter merges two triggers field by field: the lower threshold and the lower
// probability, so that either one's concern is met.
func (t OverloadTrigger) Stricter(o OverloadTrigger) OverloadTrigger {
	return OverloadTrigger{Threshold: min(t.Threshold, o.Threshold), Probability: min(t.Probability, o.Probability)}
}

// ParseResource reads a resource name: cpu, mem, net or disk.
func ParseResource(name string) (model.Resource, bool) {
	for _, r := range model.AllResources {
		if r.String() == name {
			return r, true
		}
	}
	return 0, false
}

// DefaultHeadroom is the configuration headroom ships with. Its numbers are principles,
// not fits: act when an overload is more likely than not to start before the next
// cycle could react; on every resource, with memory acting earlier (at 90 % of RAM)
// and surer (at 1-in-5 odds), because a host past its RAM swaps or kills every VM
// while CPU, network and disk past capacity only share out in proportion; fill hosts to their capacity at the 90 % bound; try to empty any
// host (no utilisation gate: the fit of its VMs elsewhere at the 90 % bound and the
// energy-versus-migration balance decide), least used first, onto hosts with room for
// any one VM's return to its peak and, in memory, for all of them at once (memory is
// not shared out past capacity); charge a migration the energy measured for one;
// among hosts with room, prefer the fullest running host (packing), with headroom
// only as a tie-breaker.
func DefaultHeadroom() HeadroomConfig {
	return HeadroomConfig{
		Horizon:    30 * time.Minute,
		Confidence: 0.9,
		Resources:  []string{"cpu", "mem", "net", "disk"},
		Overload:   OverloadTrigger{Threshold: 1.0, Probability: 0.5},
		OverloadByResource: map[string]OverloadTrigger{
			"mem": {Threshold: 0.9, Probability: 0.2},
		},
		Underload: UnderloadTrigger{Enabled: true, Threshold: 1.0, Probability: 0.9, RoomForPeaks: true},
		LeadTime:  LeadTime{Margin: time.Minute},
		// A migration is charged the energy measured for one, 0.512 J per MB moved
		// over both hosts and the link (Liu et al., "Performance and energy modeling
		// for live migration of virtual machines", HPDC 2011: E = 0.512 V + 20.2 J),
		// and nothing per second: its duration is already weighed by the lead time
		// and by the VM choice, and a guessed wattage (it was 400 W) refused every
		// host holding a large VM.
		Thrash: AntiThrash{Cooldown: time.Hour, MaxPerCycle: 200, CostJoulesPerMB: model.MigrationJoulesPerMB},
		Placement: PlacementConfig{
			Target:              1.0,
			PreferRoomForPeaks:  true,
			MemoryPeaksTogether: true,
			Filters:             []string{"capacity", "anti-affinity", "affinity", "host-affinity"},
			Scorers:             []WeightedStep{{"packing", 1}, {"headroom", 0.25}, {"affinity", 1}, {"migration-cost", 0.5}},
		},
	}
}

// LoadHeadroom reads a YAML file over the defaults. Unknown keys are errors.
func LoadHeadroom(path string) (HeadroomConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return HeadroomConfig{}, err
	}
	return ParseHeadroom(b, path)
}

// ParseHeadroom parses YAML over the defaults; name labels errors.
func ParseHeadroom(b []byte, name string) (HeadroomConfig, error) {
	c := DefaultHeadroom()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && err.Error() != "EOF" {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Validate names the first field that is out of range.
func (c *HeadroomConfig) Validate() error {
	switch {
	case c.Horizon <= 0:
		return fmt.Errorf("horizon: %v must be positive", c.Horizon)
	case !(c.Confidence > 0 && c.Confidence < 1):
		return fmt.Errorf("confidence: %g must be in (0, 1)", c.Confidence)
	case !(c.Overload.Threshold > 0 && c.Overload.Threshold <= 2):
		return fmt.Errorf("overload.threshold: %g must be in (0, 2]", c.Overload.Threshold)
	case !(c.Overload.Probability > 0 && c.Overload.Probability < 1):
		return fmt.Errorf("overload.probability: %g must be in (0, 1)", c.Overload.Probability)
	case !(c.Underload.Threshold >= 0 && c.Underload.Threshold <= 1):
		return fmt.Errorf("underload.threshold: %g must be in [0, 1]", c.Underload.Threshold)
	case !(c.Underload.Probability > 0 && c.Underload.Probability < 1):
		return fmt.Errorf("underload.probability: %g must be in (0, 1)", c.Underload.Probability)
	case c.LeadTime.Margin < 0:
		return fmt.Errorf("lead_time.margin: %v must not be negative", c.LeadTime.Margin)
	case c.Thrash.Cooldown < 0:
		return fmt.Errorf("anti_thrash.cooldown: %v must not be negative", c.Thrash.Cooldown)
	case c.Thrash.MaxPerCycle <= 0:
		return fmt.Errorf("anti_thrash.max_per_cycle: %d must be positive", c.Thrash.MaxPerCycle)
	case !(c.Thrash.CostWatts >= 0) || math.IsInf(c.Thrash.CostWatts, 0):
		return fmt.Errorf("anti_thrash.cost_watts: %g must not be negative", c.Thrash.CostWatts)
	case !(c.Thrash.CostJoulesPerMB >= 0) || math.IsInf(c.Thrash.CostJoulesPerMB, 0):
		return fmt.Errorf("anti_thrash.cost_joules_per_mb: %g must not be negative", c.Thrash.CostJoulesPerMB)
	case !(c.Placement.Target > 0 && c.Placement.Target <= 1.5):
		return fmt.Errorf("placement.target: %g must be in (0, 1.5]", c.Placement.Target)
	}
	if len(c.Resources) == 0 {
		return fmt.Errorf("resources: name at least one of cpu, mem, net, disk")
	}
	seen := map[string]bool{}
	for i, n := range c.Resources {
		if _, ok := ParseResource(n); !ok {
			return fmt.Errorf("resources[%d]: unknown resource %q (known: cpu, mem, net, disk)", i, n)
		}
		if seen[n] {
			return fmt.Errorf("resources[%d]: %q given twice", i, n)
		}
		seen[n] = true
	}
	if err := checkTriggers("overload_by_resource", c.OverloadByResource); err != nil {
		return err
	}
	for n, f := range c.Placement.Fill {
		if _, ok := ParseResource(n); !ok {
			return fmt.Errorf("placement.fill.%s: unknown resource (known: cpu, mem, net, disk)", n)
		}
		if !(f > 0 && f <= 1.5) {
			return fmt.Errorf("placement.fill.%s: %g must be in (0, 1.5]", n, f)
		}
	}
	for g, gc := range c.Groups {
		if o := gc.Overload; o != nil && !o.valid() {
			return fmt.Errorf("groups.%s.overload: threshold %g, probability %g out of range", g, o.Threshold, o.Probability)
		}
		if err := checkTriggers("groups."+g+".overload_by_resource", gc.OverloadByResource); err != nil {
			return err
		}
	}
	return nil
}

func (t OverloadTrigger) valid() bool {
	return t.Probability > 0 && t.Probability < 1 && t.Threshold > 0 && t.Threshold <= 2
}

func checkTriggers(field string, m map[string]OverloadTrigger) error {
	for n, t := range m {
		if _, ok := ParseResource(n); !ok {
			return fmt.Errorf("%s: unknown resource %q (known: cpu, mem, net, disk)", field, n)
		}
		if !t.valid() {
			return fmt.Errorf("%s.%s: threshold %g must be in (0, 2] and probability %g in (0, 1)", field, n, t.Threshold, t.Probability)
		}
	}
	return nil
}

// Normal helpers: the host's demand at a step is treated as normal with the summed
// means and variances of its VMs' forecasts (VMs independent).

// Z is the standard normal quantile at p.
func Z(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

// ProbAbove is P(X > x) for X ~ N(mu, sigma^2).
func ProbAbove(mu, sigma, x float64) float64 {
	if sigma <= 0 {
		if mu > x {
			return 1
		}
		return 0
	}
	return 0.5 * math.Erfc((x-mu)/(sigma*math.Sqrt2))
}
