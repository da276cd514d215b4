package core

import (
	"fmt"
	"math"
	"slices"
	"sort"

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
	return &Headroom{PolicyName: name, Cfg: cfg, chain: ch}, nil
}

func (p *Headroom) Name() string { return p.PolicyName }

// HorizonSteps is how many forecast steps the policy wants at a decision interval.
func (p *Headroom) HorizonSteps(interval float64) int {
	return max(1, int(math.Round(p.Cfg.Horizon.Seconds()/interval)))
}

// Confidence is the level its upper bounds should be computed at.
func (p *Headroom) Confidence() float64 { return p.Cfg.Confidence }

func (p *Headroom) Place(st *cluster.State, v int) int {
	h, _ := p.chain.Select(placement.NewContext(st, policy.Z(p.Cfg.Confidence), p.Cfg.Placement.Target), v, nil, false)
	return h
}

// hostRisk is the first step at which P(demand > threshold x capacity) reaches the
// trigger probability, with that probability; step -1 when none does.
func hostRisk(st *cluster.State, h int, trig policy.OverloadTrigger) (step int, prob float64) {
	limit := trig.Threshold * st.Snap.Hosts[h].Capacity.CPU
	for s := 0; s <= st.Steps(); s++ {
		mu, variance := st.HostMoment(h, -1, s)
		pr := policy.ProbAbove(mu, math.Sqrt(variance), limit)
		if pr >= trig.Probability {
			return s, pr
		}
		prob = max(prob, pr)
	}
	return -1, prob
}

// overloadPick is a candidate to leave an overloaded host: whether its move
// alone makes the host safe, how long the move takes, and its demand bound at
// the breach step.
type overloadPick struct {
	v           int
	clears      bool
	secs, bound float64
}

// better: a move that makes the host safe beats one that does not; among those,
// the quicker, then the larger bound; among the rest, the larger bound per
// second.
func (a overloadPick) better(b overloadPick) bool {
	switch {
	case a.clears != b.clears:
		return a.clears
	case a.clears && a.secs != b.secs:
		return a.secs < b.secs
	case a.clears:
		return a.bound > b.bound
	}
	return (a.bound+1)/(a.secs+1) > (b.bound+1)/(b.secs+1)
}

// safeWithout reports whether host h would pass the trigger at every step of the
// horizon without VM v (VMs independent: moments subtract).
func safeWithout(st *cluster.State, h, v int, trig policy.OverloadTrigger) bool {
	limit := trig.Threshold * st.Snap.Hosts[h].Capacity.CPU
	for s := 0; s <= st.Steps(); s++ {
		mu, variance := st.HostMoment(h, -1, s)
		mv, vv := st.VMMoment(v, s)
		if policy.ProbAbove(mu-mv, math.Sqrt(max(variance-vv, 0)), limit) >= trig.Probability {
			return false
		}
	}
	return true
}

func (p *Headroom) trigger(snap *model.Snapshot, h int) policy.OverloadTrigger {
	t := p.Cfg.Overload
	for _, v := range snap.Hosts[h].VMs {
		if g, ok := p.Cfg.Groups[snap.VMs[v].Group]; ok && g.Overload != nil {
			// The strictest group on the host decides.
			if g.Overload.Threshold < t.Threshold || g.Overload.Probability < t.Probability {
				t = *g.Overload
			}
		}
	}
	return t
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

// HostRisk is one host's overload assessment.
type HostRisk struct {
	Host        string  `json:"host"`
	Step        int     `json:"breach_step"`
	Probability float64 `json:"probability"`
	Acted       bool    `json:"acted"`
	Why         string  `json:"why"`
}

// Explain runs the policy and keeps every host's filter verdict or scores.
func (p *Headroom) Explain(in Input) Explained { return p.plan(in, true) }

func (p *Headroom) plan(in Input, explain bool) Explained {
	snap := in.Snapshot
	st := cluster.New(snap, in.Forecasts)
	cfg := &p.Cfg
	zC := policy.Z(cfg.Confidence)
	ctx := placement.NewContext(st, zC, cfg.Placement.Target)
	n := len(snap.Hosts)
	var out Explained
	if explain {
		out.Candidates = map[string][]placement.Candidate{}
	}
	budget := cfg.Thrash.MaxPerCycle
	cooling := func(v int) bool {
		vm := &snap.VMs[v]
		return vm.LastMigration > 0 && snap.Time-vm.LastMigration < cfg.Thrash.Cooldown.Seconds()
	}
	inFlight := map[string]bool{}
	for _, m := range in.InFlight {
		inFlight[m.VMInstanceID] = true
	}
	movable := func(v int) bool { return !snap.VMs[v].Migrating() && !inFlight[snap.VMs[v].ID] }
	horizon := float64(st.Steps()) * snap.Interval

	// 1. Overload: hosts whose breach comes before the next cycle could react.
	over := make([]bool, n)
	received := make([]bool, n)
	type risky struct {
		h, step int
		prob    float64
	}
	var risks []risky
	for h := range snap.Hosts {
		if len(st.VMs(h)) == 0 {
			continue
		}
		trig := p.trigger(snap, h)
		s, pr := hostRisk(st, h, trig)
		if s < 0 {
			continue
		}
		slowest := 0.0
		for _, v := range st.VMs(h) {
			slowest = max(slowest, st.MigrationSeconds(v, h))
		}
		// Waiting one cycle is safe if a move started then still ends before the breach.
		act := s == 0 || float64(s)*snap.Interval < snap.Interval+slowest+cfg.LeadTime.Margin.Seconds()
		if explain {
			why := fmt.Sprintf("P(CPU > %.0f%%) = %.2f at step %d", 100*trig.Threshold, pr, s)
			if !act {
				why += "; breach is later than the next cycle plus the migration: wait"
			}
			out.Risks = append(out.Risks, HostRisk{Host: snap.Hosts[h].ID, Step: s, Probability: pr, Acted: act, Why: why})
		}
		if act {
			over[h] = true
			risks = append(risks, risky{h, s, pr})
			out.Overloaded = append(out.Overloaded, h)
		}
	}
	sort.SliceStable(risks, func(i, j int) bool {
		if risks[i].step != risks[j].step {
			return risks[i].step < risks[j].step
		}
		return risks[i].prob > risks[j].prob
	})
	excl := slices.Clone(over)
	for _, r := range risks {
		h := r.h
		trig := p.trigger(snap, h)
		tried := map[int]bool{}
		for budget > 0 {
			if s, _ := hostRisk(st, h, trig); s < 0 {
				break
			}
			// Of the VMs whose move alone makes the host safe, take the quickest
			// to move (MMT's rule, with the transfer model's times live); if none
			// is enough, the one that takes most risk away per second of
			// migration. Risk is the VM's bound at the breach step, so of two
			// equally quick moves the climbing VM goes before the steady one.
			best := overloadPick{v: -1}
			for _, v := range st.VMs(h) {
				if tried[v] || !movable(v) || snap.VMs[v].Host != h || (cooling(v) && r.step > 0) {
					continue
				}
				mu, variance := st.VMMoment(v, max(r.step, 0))
				c := overloadPick{v, safeWithout(st, h, v, trig), st.MigrationSeconds(v, h), mu + zC*math.Sqrt(variance)}
				if best.v < 0 || c.better(best) {
					best = c
				}
			}
			if best.v < 0 {
				break
			}
			v := best.v
			tried[v] = true
			st.Remove(v, h)
			t, cands := p.chain.Select(ctx, v, excl, explain)
			if t < 0 {
				st.Add(v, h)
				out.Unplaced = append(out.Unplaced, Unplaced{VM: v, Reason: NoSuitableHost + ": " + placement.RejectionSummary(cands)})
				if explain {
					out.Candidates[snap.VMs[v].ID] = cands
				}
				continue
			}
			st.Add(v, t)
			received[t] = true
			budget--
			why := "its move alone makes the host safe and is the quickest such move"
			if !best.clears {
				why = "no single move makes the host safe; its demand bound there is the largest per migration second"
			}
			out.Moves = append(out.Moves, p.move(snap, v, t, model.PriorityOverload, model.Reason{
				Rule:        "overload",
				Probability: r.prob,
				Detail: fmt.Sprintf("P(host %s CPU > %.0f%% of capacity) = %.2f at step %d of %d (%.0f s ahead); %s (%.0f s)",
					snap.Hosts[h].ID, 100*trig.Threshold, r.prob, r.step, st.Steps(), float64(r.step)*snap.Interval, why, best.secs),
				Rejected: rejected(cands),
			}))
			if explain {
				out.Candidates[snap.VMs[v].ID] = cands
			}
		}
	}

	// 2. Underload: empty lightly used hosts, least used first, if every VM fits
	// elsewhere at the underload confidence and the energy saved beats the moves.
	if cfg.Underload.Enabled && budget > 0 {
		uctx := placement.NewContext(st, policy.Z(cfg.Underload.Probability), cfg.Placement.Target)
		zU := policy.Z(cfg.Underload.Probability)
		type cand struct {
			h    int
			util float64
		}
		var cs []cand
		for h := range snap.Hosts {
			if over[h] || received[h] || len(st.VMs(h)) == 0 || snap.Hosts[h].Util == 0 {
				continue
			}
			cp := snap.Hosts[h].Capacity.CPU
			peak, mean := 0.0, 0.0
			for s := 0; s <= st.Steps(); s++ {
				mu, variance := st.HostMoment(h, -1, s)
				peak = max(peak, (mu+zU*math.Sqrt(variance))/cp)
				mean += mu / cp
			}
			if peak < cfg.Underload.Threshold {
				cs = append(cs, cand{h, mean / float64(st.Steps()+1)})
			}
		}
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].util < cs[j].util })
		emptying := slices.Clone(over)
		for h := range snap.Hosts {
			if len(st.VMs(h)) == 0 {
				emptying[h] = true // never wake an empty host to consolidate onto it
			}
		}
		type mv struct {
			v, t  int
			cands []placement.Candidate
		}
		// Failed attempts cost a placement search each, so a full cluster is tried
		// only so far per cycle.
		tries := 2 * cfg.Thrash.MaxPerCycle
		for _, c := range cs {
			h := c.h
			if received[h] || tries == 0 {
				continue
			}
			tries--
			var vms []int
			ok := true
			for _, v := range st.VMs(h) {
				if !movable(v) || snap.VMs[v].Host != h || cooling(v) {
					ok = false
					break
				}
				vms = append(vms, v)
			}
			if !ok || len(vms) > budget {
				continue
			}
			byDemand(snap, vms)
			emptying[h] = true
			var placed []mv
			cost := 0.0
			for _, v := range vms {
				t, cands := p.chain.Select(uctx, v, emptying, explain)
				if t < 0 {
					ok = false
					break
				}
				st.Remove(v, h)
				st.Add(v, t)
				placed = append(placed, mv{v, t, cands})
				cost += st.MigrationSeconds(v, h) * cfg.Thrash.CostWatts
			}
			gain := snap.Hosts[h].Power[0] * max(horizon, snap.Interval)
			if !ok || gain <= cost {
				for i := len(placed) - 1; i >= 0; i-- {
					st.Remove(placed[i].v, placed[i].t)
					st.Add(placed[i].v, h)
				}
				emptying[h] = over[h]
				continue
			}
			for _, m := range placed {
				received[m.t] = true
				budget--
				out.Moves = append(out.Moves, p.move(snap, m.v, m.t, model.PriorityConsolidate, model.Reason{
					Rule:        "underload",
					Probability: cfg.Underload.Probability,
					Detail: fmt.Sprintf("emptying host %s: all %d of its VMs fit elsewhere at the %.0f%% bound for the next %.0f s; switching it off saves %.0f Wh against %.0f Wh charged for the moves",
						snap.Hosts[h].ID, len(vms), 100*cfg.Underload.Probability, horizon, gain/3600, cost/3600),
					Rejected: rejected(m.cands),
				}))
				if explain {
					out.Candidates[snap.VMs[m.v].ID] = m.cands
				}
			}
		}
	}
	return out
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
	ctx := placement.NewContext(st, policy.Z(p.Cfg.Confidence), p.Cfg.Placement.Target)
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
