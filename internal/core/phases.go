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

// cycle is the state the phases of one Headroom decision share: the what-if
// cluster, the move budget, which hosts are overloaded or have received VMs, and
// the plan being built. Each phase is a method that reads and extends it.
type cycle struct {
	p    *Headroom
	snap *model.Snapshot
	st   *cluster.State
	cfg  *policy.HeadroomConfig
	zC   float64
	ctx  *placement.Context
	// short checks targets over the horizon only: overload relief falls back to it
	// when no host has room for the whole cooldown, since a move that is safe for
	// the horizon beats staying in a breach. Consolidation never does.
	short *placement.Context
	// peaky is ctx with the peak rule: overload relief tries it first when
	// placement.prefer_room_for_peaks is on (nil when off).
	peaky    *placement.Context
	only     []bool // every host excluded but one, for peakRoom
	mp       *memPeaks
	explain  bool
	budget   int
	inFlight map[string]bool
	over     []bool
	received []bool
	// last is the last step the triggers read; horizon is its time ahead.
	last    int
	horizon float64
	out     Explained
}

func (p *Headroom) newCycle(in Input, explain bool) *cycle {
	snap := in.Snapshot
	st := cluster.New(snap, in.Forecasts)
	c := &cycle{
		p: p, snap: snap, st: st, cfg: &p.Cfg, zC: policy.Z(p.Cfg.Confidence), explain: explain,
		budget:   p.Cfg.Thrash.MaxPerCycle,
		inFlight: map[string]bool{},
		over:     make([]bool, len(snap.Hosts)),
		received: make([]bool, len(snap.Hosts)),
	}
	c.last = min(st.Steps(), p.triggerSteps(snap.Interval))
	c.horizon = float64(c.last) * snap.Interval
	c.ctx = p.context(st, c.zC)
	c.short = p.context(st, c.zC)
	c.short.Last = c.last
	if p.Cfg.Placement.PreferRoomForPeaks {
		c.peaky = p.context(st, c.zC)
		c.peaky.Peaks = true
	}
	c.mp = c.newMemPeaks()
	if explain {
		c.out.Candidates = map[string][]placement.Candidate{}
	}
	for _, m := range in.InFlight {
		c.inFlight[m.VMInstanceID] = true
	}
	return c
}

// label is a resource's name in explanations.
func label(r model.Resource) string {
	return [...]string{"CPU", "memory", "network", "disk"}[r]
}

func (c *cycle) cooling(v int) bool {
	vm := &c.snap.VMs[v]
	return vm.LastMigration > 0 && c.snap.Time-vm.LastMigration < c.cfg.Thrash.Cooldown.Seconds()
}

func (c *cycle) movable(v int) bool {
	return !c.snap.VMs[v].Migrating() && !c.inFlight[c.snap.VMs[v].ID]
}

// overloadPick is a candidate to leave an overloaded host: whether its move
// alone makes the host safe, how long the move takes, and its demand bound of
// the binding resource at the breach step.
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

type riskyHost struct {
	h int
	risk
}

// assess finds the hosts whose first breach, in any resource, comes before the
// next cycle could react, and marks them overloaded.
func (c *cycle) assess() []riskyHost {
	snap, st := c.snap, c.st
	var risks []riskyHost
	for h := range snap.Hosts {
		if len(st.VMs(h)) == 0 {
			continue
		}
		trig := c.p.triggers(snap, h)
		rk := hostRisk(st, h, &trig, c.p.resources, c.last)
		if rk.step < 0 {
			continue
		}
		slowest := 0.0
		for _, v := range st.VMs(h) {
			slowest = max(slowest, st.MigrationSeconds(v, h))
		}
		// Waiting one cycle is safe if a move started then still ends before the
		// breach; the same lead time holds for every resource.
		act := rk.step == 0 || float64(rk.step)*snap.Interval < snap.Interval+slowest+c.cfg.LeadTime.Margin.Seconds()
		if c.explain {
			why := fmt.Sprintf("P(%s > %.0f%%) = %.2f at step %d", label(rk.r), 100*trig[rk.r].Threshold, rk.prob, rk.step)
			if !act {
				why += "; breach is later than the next cycle plus the migration: wait"
			}
			c.out.Risks = append(c.out.Risks, HostRisk{Host: snap.Hosts[h].ID, Resource: rk.r.String(), Step: rk.step,
				Probability: rk.prob, Acted: act, Why: why})
		}
		if act {
			c.over[h] = true
			risks = append(risks, riskyHost{h, rk})
			c.out.Overloaded = append(c.out.Overloaded, h)
		}
	}
	sort.SliceStable(risks, func(i, j int) bool {
		if risks[i].step != risks[j].step {
			return risks[i].step < risks[j].step
		}
		return risks[i].prob > risks[j].prob
	})
	return risks
}

// overload relieves each host at risk, earliest breach first, until it is safe in
// every resource or nothing more can move.
func (c *cycle) overload() {
	snap, st := c.snap, c.st
	risks := c.assess()
	excl := slices.Clone(c.over)
	for _, first := range risks {
		h := first.h
		trig := c.p.triggers(snap, h)
		tried := map[int]bool{}
		for c.budget > 0 {
			// The binding resource can change as VMs leave.
			rk := hostRisk(st, h, &trig, c.p.resources, c.last)
			if rk.step < 0 {
				break
			}
			best := c.pick(h, rk, &trig, tried, first.step)
			if best.v < 0 {
				break
			}
			v := best.v
			tried[v] = true
			st.Remove(v, h)
			// A target that also has room for a recent peak takes no risk a VM has
			// already shown; without one, the bound alone, as leaving the breach is worse.
			// Both contexts score alike, so when the bound's best host has peak room it is
			// also the best of those with peak room, and the full peak search (costly on
			// a large fleet) runs only when it has not.
			t, cands := c.p.chain.Select(c.ctx, v, excl, c.explain)
			noPeakRoom := false
			if t >= 0 && c.peaky != nil && (!c.peakRoom(v, t) || c.mp.blocks(v, t)) {
				c.peaky.ExcludeAlso = c.mp.ruleIn(c.peaky)
				pt, pc := c.p.chain.Select(c.peaky, v, excl, c.explain)
				c.peaky.ExcludeAlso = nil
				if pt >= 0 {
					t, cands = pt, pc
				} else {
					noPeakRoom = true
				}
			}
			shortOnly := false
			if t < 0 && c.last < st.Steps() {
				t, cands = c.p.chain.Select(c.short, v, excl, c.explain)
				shortOnly = t >= 0
			}
			if c.explain {
				c.out.Candidates[snap.VMs[v].ID] = cands
			}
			if t < 0 {
				st.Add(v, h)
				c.out.Unplaced = append(c.out.Unplaced, Unplaced{VM: v, Reason: NoSuitableHost + ": " + placement.RejectionSummary(cands)})
				continue
			}
			st.Add(v, t)
			c.mp.move(v, h, t)
			c.received[t] = true
			c.budget--
			why := fmt.Sprintf("its move alone makes the host safe and is the quickest such move (%.0f s)", best.secs)
			if !best.clears {
				why = fmt.Sprintf("no single move makes the host safe; its %s bound there is the largest per migration second (%.0f s)", label(rk.r), best.secs)
			}
			if shortOnly {
				why += "; no host has room for the whole cooldown, this one for the horizon"
			}
			if noPeakRoom {
				why += "; no host has room for a recent peak, this one for the bound"
			}
			c.out.Moves = append(c.out.Moves, c.p.move(snap, v, t, model.PriorityOverload, model.Reason{
				Rule:        "overload",
				Probability: rk.prob,
				Detail: fmt.Sprintf("P(host %s %s > %.0f%% of capacity) = %.2f at step %d of %d (%.0f s ahead); %s",
					snap.Hosts[h].ID, label(rk.r), 100*trig[rk.r].Threshold, rk.prob, rk.step, c.last, float64(rk.step)*snap.Interval, why),
				Rejected: rejected(cands),
			}))
		}
	}
}

// peakRoom: host t passes the chain with the peak rule for v (a one-host search).
func (c *cycle) peakRoom(v, t int) bool {
	if c.only == nil {
		c.only = make([]bool, len(c.snap.Hosts))
		for h := range c.only {
			c.only[h] = true
		}
	}
	c.only[t] = false
	h, _ := c.p.chain.Select(c.peaky, v, c.only, false)
	c.only[t] = true
	return h == t
}

// pick chooses the VM to leave h: of the VMs whose move alone makes the host safe
// in every resource, the quickest to move (MMT's rule, with the transfer model's
// times live); if none is enough, the one that takes most of the binding
// resource's risk away per second of migration. Risk is the VM's bound of that
// resource at the breach step, so of two equally quick moves the climbing VM goes
// before the steady one. A VM in cooldown stays unless the breach is now.
func (c *cycle) pick(h int, rk risk, trig *triggers, tried map[int]bool, firstStep int) overloadPick {
	st := c.st
	best := overloadPick{v: -1}
	for _, v := range st.VMs(h) {
		if tried[v] || !c.movable(v) || c.snap.VMs[v].Host != h || (c.cooling(v) && firstStep > 0) {
			continue
		}
		mu, variance := st.VMMomentOf(rk.r, v, max(rk.step, 0))
		x := overloadPick{v, safeWithout(st, h, v, trig, c.p.resources, c.last), st.MigrationSeconds(v, h), mu + c.zC*math.Sqrt(variance)}
		if best.v < 0 || x.better(best) {
			best = x
		}
	}
	return best
}

// peakShare is h's largest bound over the horizon, as a share of capacity, in any
// resource the policy reads; and its mean CPU share.
func (c *cycle) peakShare(h int, z float64) (peak, meanCPU float64) {
	st := c.st
	capacity := c.snap.Hosts[h].Capacity
	for _, r := range c.p.resources {
		cp := capacity.Get(r)
		if cp <= 0 {
			continue
		}
		for s := 0; s <= st.Steps(); s++ {
			mu, variance := st.HostMomentOf(r, h, -1, s)
			peak = max(peak, (mu+z*math.Sqrt(variance))/cp)
			if r == model.CPU {
				meanCPU += mu / cp
			}
		}
	}
	return peak, meanCPU / float64(st.Steps()+1)
}

// underload empties lightly used hosts, least used first, if every VM fits
// elsewhere at the underload confidence and the energy saved beats the moves.
func (c *cycle) underload() {
	cfg, snap, st := c.cfg, c.snap, c.st
	if !cfg.Underload.Enabled || c.budget <= 0 {
		return
	}
	zU := policy.Z(cfg.Underload.Probability)
	uctx := c.p.context(st, zU)
	uctx.Peaks = cfg.Underload.RoomForPeaks // optional work takes no risk a VM has already shown
	mp := c.mp
	if !uctx.Peaks {
		mp = &memPeaks{}
	}
	uctx.ExcludeAlso = mp.ruleIn(uctx)
	type cand struct {
		h    int
		util float64
	}
	var cs []cand
	for h := range snap.Hosts {
		if c.over[h] || c.received[h] || len(st.VMs(h)) == 0 || snap.Hosts[h].Util == 0 {
			continue
		}
		if peak, mean := c.peakShare(h, zU); peak < cfg.Underload.Threshold {
			cs = append(cs, cand{h, mean})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].util < cs[j].util })
	emptying := slices.Clone(c.over)
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
	for _, x := range cs {
		h := x.h
		if c.received[h] || tries == 0 {
			continue
		}
		tries--
		var vms []int
		ok := true
		for _, v := range st.VMs(h) {
			if !c.movable(v) || snap.VMs[v].Host != h || c.cooling(v) {
				ok = false
				break
			}
			vms = append(vms, v)
		}
		if !ok || len(vms) > c.budget {
			continue
		}
		byDemand(snap, vms)
		emptying[h] = true
		var placed []mv
		cost := 0.0
		for _, v := range vms {
			t, cands := c.p.consolidate.Select(uctx, v, emptying, c.explain)
			if t < 0 {
				ok = false
				break
			}
			st.Remove(v, h)
			st.Add(v, t)
			mp.move(v, h, t)
			placed = append(placed, mv{v, t, cands})
			cost += c.migrationJoules(v, h)
		}
		gain := snap.Hosts[h].Power[0] * max(c.horizon, snap.Interval)
		if !ok || gain <= cost {
			for i := len(placed) - 1; i >= 0; i-- {
				st.Remove(placed[i].v, placed[i].t)
				st.Add(placed[i].v, h)
				mp.move(placed[i].v, placed[i].t, h)
			}
			emptying[h] = c.over[h]
			continue
		}
		for _, m := range placed {
			c.received[m.t] = true
			c.budget--
			c.out.Moves = append(c.out.Moves, c.p.move(snap, m.v, m.t, model.PriorityConsolidate, model.Reason{
				Rule:        "underload",
				Probability: cfg.Underload.Probability,
				Detail: fmt.Sprintf("emptying host %s: all %d of its VMs fit elsewhere at the %.0f%% bound for the next %.0f s; switching it off saves %.0f Wh against %.0f Wh charged for the moves",
					snap.Hosts[h].ID, len(vms), 100*cfg.Underload.Probability, c.horizon, gain/3600, cost/3600),
				Rejected: rejected(m.cands),
			}))
			if c.explain {
				c.out.Candidates[snap.VMs[m.v].ID] = m.cands
			}
		}
	}
}

// migrationJoules is the energy charged for moving v off h: CostJoulesPerMB for
// every MB of its memory, which a live migration copies at least once, plus
// CostWatts for its duration.
func (c *cycle) migrationJoules(v, h int) float64 {
	t := &c.cfg.Thrash
	return c.snap.VMs[v].Size.Mem*t.CostJoulesPerMB + c.st.MigrationSeconds(v, h)*t.CostWatts
}

// memPeaks is the peak rules' memory clause (placement.memory_peaks_together):
// a target, for consolidation and for overload relief's preferred search, must
// have room for all its VMs' memory peaks at once, not only for any one of them. Memory is not shared out past capacity (the host swaps or kills),
// and VMs of one application grow their memory together, so for memory,
// optional work assumes that peaks coincide. excess[h] is the sum over h's VMs
// of how far each one's peak is above its need now; nil when the rule is off.
type memPeaks struct {
	c      *cycle
	excess []float64
	mask   []bool
	// v's memory need now and PeakExcess, read once per VM (blocks).
	forV      int
	forSt     *cluster.State
	vNow, vEx float64
}

func (c *cycle) newMemPeaks() *memPeaks {
	m := &memPeaks{c: c, forV: -1}
	if !c.cfg.Placement.MemoryPeaksTogether || !slices.Contains(c.p.resources, model.Mem) {
		return m
	}
	m.excess = make([]float64, len(c.snap.Hosts))
	for h := range c.snap.Hosts {
		for _, v := range c.st.VMs(h) {
			m.excess[h] += c.st.PeakExcess(model.Mem, v)
		}
	}
	return m
}

// move records v's move from h to t in the sums.
func (m *memPeaks) move(v, h, t int) {
	if m.excess == nil {
		return
	}
	x := m.c.st.PeakExcess(model.Mem, v)
	m.excess[h] -= x
	m.excess[t] += x
}

// blocks reports whether the rule leaves host t no room for v: its memory need
// now with v, plus every VM's excess there and v's, exceeds its memory capacity.
// v's need now and excess are read once per VM (they do not depend on the host).
func (m *memPeaks) blocks(v, t int) bool {
	if m.excess == nil {
		return false
	}
	st := m.c.st
	cp := m.c.snap.Hosts[t].Capacity.Mem
	if cp <= 0 || len(st.VMs(t)) == 0 {
		return false
	}
	if m.forV != v || m.forSt != st {
		m.forV, m.forSt = v, st
		m.vNow, _ = st.VMMomentOf(model.Mem, v, 0)
		m.vEx = st.PeakExcess(model.Mem, v)
	}
	// HostMomentOf(Mem, t, v, 0): the host's sum at step 0 (the Summary's Mu0,
	// which the selection's quick checks read next), then v's.
	now := st.Summary(model.Mem, t).Mu0 + m.vNow
	return now+m.excess[t]+m.vEx > cp
}

// blocksIn is blocks with the host's memory capacity, need now and VM count
// read through ctx.MemNow (from the selection's compact record of the host,
// the same values): ctx must be a Context on the same State.
func (m *memPeaks) blocksIn(ctx *placement.Context, v, t int) bool {
	if m.excess == nil {
		return false
	}
	st := m.c.st
	cp, mu0, n := ctx.MemNow(t)
	if cp <= 0 || n == 0 {
		return false
	}
	if m.forV != v || m.forSt != st {
		m.forV, m.forSt = v, st
		m.vNow, _ = st.VMMomentOf(model.Mem, v, 0)
		m.vEx = st.PeakExcess(model.Mem, v)
	}
	now := mu0 + m.vNow
	return now+m.excess[t]+m.vEx > cp
}

// ruleIn is rule for selections in ctx, through blocksIn.
func (m *memPeaks) ruleIn(ctx *placement.Context) func(v, t int) bool {
	if m.excess == nil {
		return nil
	}
	return func(v, t int) bool { return m.blocksIn(ctx, v, t) }
}

// blocksPlain is blocks as first written, for the tests.
func (m *memPeaks) blocksPlain(v, t int) bool {
	if m.excess == nil {
		return false
	}
	st := m.c.st
	cp := m.c.snap.Hosts[t].Capacity.Mem
	if cp <= 0 || len(st.VMs(t)) == 0 {
		return false
	}
	now, _ := st.HostMomentOf(model.Mem, t, v, 0)
	return now+m.excess[t]+st.PeakExcess(model.Mem, v) > cp
}

// rule is blocks as a selection's ExcludeAlso (nil when the rule is off): the
// hosts it leaves no room for are excluded as if in the selection's mask, and
// only hosts the mask leaves in are asked.
func (m *memPeaks) rule() func(v, t int) bool {
	if m.excess == nil {
		return nil
	}
	return m.blocks
}

// exclude is excl with every host added that the rule leaves no room for v
// (blocks); excl itself when the rule is off. The phases pass rule to the
// selection instead; tests compare the two.
func (m *memPeaks) exclude(v int, excl []bool) []bool {
	if m.excess == nil {
		return excl
	}
	if m.mask == nil {
		m.mask = make([]bool, len(excl))
	}
	for t := range excl {
		m.mask[t] = excl[t] || m.blocksPlain(v, t)
	}
	return m.mask
}
