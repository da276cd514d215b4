package core

import (
	"fmt"
	"math"
	"slices"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/placement"
	"github.com/headroom/headroom/internal/policy"
)

// Headroom is the proactive policy: it moves a VM off a host when the forecasts say
// the host will probably be overloaded before the next cycle could react, places it
// where it fits at the upper bound over the whole horizon, and empties lightly used
// hosts whose VMs fit elsewhere, when the energy saved outweighs the moves.
type Headroom struct {
	PolicyName string
	Cfg        policy.HeadroomConfig
	chain      *placement.Chain
	// consolidate ranks consolidation's targets: chain, unless
	// underload.scorers gives consolidation its own scorers.
	consolidate *placement.Chain
	resources   []model.Resource
}

// NewHeadroom checks cfg and builds its placement chain.
func NewHeadroom(name string, cfg policy.HeadroomConfig) (*Headroom, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	names := make([]string, len(cfg.Placement.Scorers))
	weights := make([]float64, len(cfg.Placement.Scorers))
	for i, s := range cfg.Placement.Scorers {
		names[i], weights[i] = s.Name, s.Weight
	}
	ch, err := placement.NewChain(cfg.Placement.Filters, names, weights)
	if err != nil {
		return nil, err
	}
	cons := ch
	if us := cfg.Underload.Scorers; len(us) > 0 {
		names, weights := make([]string, len(us)), make([]float64, len(us))
		for i, s := range us {
			names[i], weights[i] = s.Name, s.Weight
		}
		if cons, err = placement.NewChain(cfg.Placement.Filters, names, weights); err != nil {
			return nil, fmt.Errorf("underload.scorers: %w", err)
		}
	}
	return &Headroom{PolicyName: name, Cfg: cfg, chain: ch, consolidate: cons, resources: cfg.ResourceList()}, nil
}

func (p *Headroom) Name() string { return p.PolicyName }

// HorizonSteps is how many forecast steps the policy wants at a decision interval:
// the horizon, or the cooldown if longer. Every move pins its VM for the cooldown
// (only a breach now moves it again), so a target must have room for that long;
// triggers still look only as far as the horizon (triggerSteps).
// The room check is capped at maxRoomSteps, the forecast engine's longest
// horizon: a lab deciding every second with a long cooldown would ask for more.
func (p *Headroom) HorizonSteps(interval float64) int {
	if !p.Cfg.Thrash.RoomForCooldown {
		return p.triggerSteps(interval)
	}
	room := min(int(math.Round(p.Cfg.Thrash.Cooldown.Seconds()/interval)), maxRoomSteps)
	return max(p.triggerSteps(interval), room)
}

const maxRoomSteps = 1024

// triggerSteps is how many steps the overload trigger reads.
func (p *Headroom) triggerSteps(interval float64) int {
	return max(1, int(math.Round(p.Cfg.Horizon.Seconds()/interval)))
}

// Confidence is the level its upper bounds should be computed at.
func (p *Headroom) Confidence() float64 { return p.Cfg.Confidence }

func (p *Headroom) Place(st *cluster.State, v int) int {
	h, _ := p.chain.Select(p.context(st, policy.Z(p.Cfg.Confidence)), v, nil, false)
	return h
}

// context is a placement context that checks every resource the policy reads, each
// up to Target x its trigger's threshold (at most 1): placement never fills a host
// to where its own trigger would act.
func (p *Headroom) context(st *cluster.State, z float64) *placement.Context {
	c := placement.NewContext(st, z, p.Cfg.Placement.Target)
	c.Resources = p.resources
	for _, r := range model.AllResources {
		c.Limits.Set(r, p.Cfg.Placement.Target*min(1, p.Cfg.Trigger(r).Threshold))
		if f, ok := p.Cfg.Placement.Fill[r.String()]; ok {
			c.Limits.Set(r, f)
		}
	}
	return c
}

// triggers are the host's trigger per resource: the policy's, made stricter field
// by field by the group of every VM on the host that sets one.
type triggers [4]policy.OverloadTrigger

func (p *Headroom) triggers(snap *model.Snapshot, h int) triggers {
	var t triggers
	for _, r := range model.AllResources {
		t[r] = p.Cfg.Trigger(r)
	}
	if len(p.Cfg.Groups) == 0 {
		return t
	}
	for _, v := range snap.Hosts[h].VMs {
		g, ok := p.Cfg.Groups[snap.VMs[v].Group]
		if !ok {
			continue
		}
		for _, r := range model.AllResources {
			if gt, ok := g.GroupTrigger(r); ok {
				t[r] = t[r].Stricter(gt)
			}
		}
	}
	return t
}

// risk is a host's first predicted breach: the step, the resource that breaches
// (the binding one) and the probability; step -1 when none reaches its trigger.
type risk struct {
	step int
	r    model.Resource
	prob float64
}

// hostRisk is the first step up to last at which, for some resource r the policy reads,
// P(demand of r > threshold_r x capacity_r) reaches r's trigger probability. Of
// resources breaching at the same step the likeliest binds. Without a breach it
// returns step -1 with the highest probability seen.
func hostRisk(st *cluster.State, h int, trig *triggers, rs []model.Resource, last int) risk {
	out := risk{step: -1}
	capacity := st.Snap.Hosts[h].Capacity
	for s := 0; s <= last; s++ {
		hit := false
		for _, r := range rs {
			c := capacity.Get(r)
			if c <= 0 {
				continue // unknown capacity never binds
			}
			mu, variance := st.HostMomentOf(r, h, -1, s)
			pr := policy.ProbAbove(mu, math.Sqrt(variance), trig[r].Threshold*c)
			fires := pr >= trig[r].Probability
			switch {
			case fires && (!hit || pr > out.prob):
				out, hit = risk{s, r, pr}, true
			case !hit && out.step < 0 && pr > out.prob:
				out.r, out.prob = r, pr
			}
		}
		if hit {
			return out
		}
	}
	return out
}

// safeWithout reports whether host h would pass every trigger at every step of the
// horizon without VM v (VMs independent: moments subtract).
func safeWithout(st *cluster.State, h, v int, trig *triggers, rs []model.Resource, last int) bool {
	capacity := st.Snap.Hosts[h].Capacity
	for _, r := range rs {
		c := capacity.Get(r)
		if c <= 0 {
			continue
		}
		for s := 0; s <= last; s++ {
			mu, variance := st.HostMomentOf(r, h, -1, s)
			mv, vv := st.VMMomentOf(r, v, s)
			if policy.ProbAbove(mu-mv, math.Sqrt(max(variance-vv, 0)), trig[r].Threshold*c) >= trig[r].Probability {
				return false
			}
		}
	}
	return true
}

func (p *Headroom) Plan(in Input) Plan {
	return p.plan(in, false).Plan
}

// Explained is a plan with, for each move and each unplaced VM, the candidates the
// chain considered.
type Explained struct {
	Plan
	Candidates map[string][]placement.Candidate `json:"candidates,omitempty"`
	Risks      []HostRisk                       `json:"host_risks,omitempty"`
}

// HostRisk is one host's overload assessment; Resource is the binding one.
type HostRisk struct {
	Host        string  `json:"host"`
	Resource    string  `json:"resource"`
	Step        int     `json:"breach_step"`
	Probability float64 `json:"probability"`
	Acted       bool    `json:"acted"`
	Why         string  `json:"why"`
}

// Explain runs the policy and keeps every host's filter verdict or scores.
func (p *Headroom) Explain(in Input) Explained { return p.plan(in, true) }

// plan runs the cycle's phases in order over one shared state: overload relief
// first, then consolidation with what budget is left.
func (p *Headroom) plan(in Input, explain bool) Explained {
	c := p.newCycle(in, explain)
	c.overload()
	c.underload()
	return c.out
}

func (p *Headroom) move(snap *model.Snapshot, v, h, prio int, why model.Reason) model.MigrationRequest {
	return model.MigrationRequest{
		VMInstanceID: snap.VMs[v].ID,
		TargetHostID: snap.Hosts[h].ID,
		Priority:     prio,
		VM:           v,
		Target:       h,
		Reason:       why,
	}
}

// rejected lists up to five alternatives with why they lost.
func rejected(cands []placement.Candidate) []string {
	var out []string
	for _, c := range cands {
		if c.Rejected != "" && c.Rejected != "excluded" {
			out = append(out, c.HostID+": "+c.Rejected+" ("+c.Reason+")")
		}
		if len(out) == 5 {
			break
		}
	}
	return out
}

// Evacuate plans moves for every VM on host h (maintenance), under the same filters and
// scorers as any other move: must rules hold, and a VM with nowhere to go is reported.
func (p *Headroom) Evacuate(in Input, h int) Explained {
	snap := in.Snapshot
	st := cluster.New(snap, in.Forecasts)
	ctx := p.context(st, policy.Z(p.Cfg.Confidence))
	excl := make([]bool, len(snap.Hosts))
	excl[h] = true
	out := Explained{Candidates: map[string][]placement.Candidate{}}
	vms := slices.Clone(st.VMs(h))
	byDemand(snap, vms)
	for _, v := range vms {
		if snap.VMs[v].Host != h || snap.VMs[v].Migrating() {
			continue
		}
		t, cands := p.chain.Select(ctx, v, excl, true)
		out.Candidates[snap.VMs[v].ID] = cands
		if t < 0 {
			out.Unplaced = append(out.Unplaced, Unplaced{VM: v, Reason: NoSuitableHost + ": " + placement.RejectionSummary(cands)})
			continue
		}
		st.Remove(v, h)
		st.Add(v, t)
		out.Moves = append(out.Moves, p.move(snap, v, t, model.PriorityMaintenance, model.Reason{
			Rule:     "drain",
			Detail:   fmt.Sprintf("host %s is being drained for maintenance", snap.Hosts[h].ID),
			Rejected: rejected(cands),
		}))
	}
	return out
}
