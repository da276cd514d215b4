package core

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/placement"
	"github.com/headroom/headroom/internal/policy"
)

// Consolidation is the dynamic-consolidation scheme of Beloglazov & Buyya as CloudSim
// 3.0.3 runs it: find overloaded hosts, take VMs off them by minimum migration time,
// place them by power-aware best fit, then try to empty the least-utilised hosts.
type Consolidation struct {
	PolicyName string
	Detector   policy.Detector
}

// placeIndex is the index Place searches, kept in the State it indexes (the
// initial placement places every VM on one State), so it goes with the State.
type placeIndex struct {
	owner *Consolidation
	ix    *placement.PABFDIndex
}

func (c *Consolidation) Name() string { return c.PolicyName }

// Place is PABFD.Find with no host excluded, through an index kept for st.
func (c *Consolidation) Place(st *cluster.State, v int) int {
	p, ok := st.Aux.(*placeIndex)
	if !ok || p.owner != c {
		p = &placeIndex{c, placement.NewPABFDIndex(st, c.Detector, nil)}
		st.Aux = p
	}
	return p.ix.Find(v)
}

func (c *Consolidation) Plan(in Input) Plan {
	snap := in.Snapshot
	st := cluster.New(snap, in.Forecasts)
	n := len(snap.Hosts)
	var plan Plan

	over := make([]bool, n)
	for h := range snap.Hosts {
		if c.Detector.Overloaded(st, h, -1) {
			over[h] = true
			plan.Overloaded = append(plan.Overloaded, h)
		}
	}

	var selected []int
	for _, h := range plan.Overloaded {
		for {
			v := policy.MinimumMigrationTime(st, h)
			if v < 0 {
				break
			}
			selected = append(selected, v)
			st.Remove(v, h)
			if !c.Detector.Overloaded(st, h, -1) {
				break
			}
		}
	}
	byDemand(snap, selected)
	// PABFD through an index: the hosts excluded only grow from here on (the
	// overloaded ones, then those not to place on), and it finds what
	// PABFD.Find finds with the same exclusions.
	pl := placement.NewPABFDIndex(st, c.Detector, over)
	for _, v := range selected {
		h := pl.Find(v)
		if h < 0 {
			// CloudSim leaves such a VM where it is but off its host's what-if list.
			plan.Unplaced = append(plan.Unplaced, Unplaced{VM: v, Reason: NoSuitableHost})
			continue
		}
		st.Add(v, h)
		plan.Moves = append(plan.Moves, c.move(snap, v, h, model.PriorityOverload, "overload"))
	}

	// Hosts not to empty; those not to place on are excluded in pl (the
	// overloaded ones already).
	exclFrom := slices.Clone(over)
	for h := range snap.Hosts {
		if snap.Hosts[h].Util == 0 {
			exclFrom[h] = true
			pl.Exclude(h)
		}
	}
	var vms []int
	type mv struct{ v, h int }
	var placed []mv
	// Hosts to try emptying, least utilised first (ties: lowest index). A host
	// not yet excluded keeps its VM list through the loop (a failed try is undone
	// in order; a host that receives VMs is excluded), so busy does not change for
	// it, and taking the next of this order is the old scan of all hosts per try,
	// which was quadratic in the fleet.
	var order []int
	for h := range snap.Hosts {
		if x := snap.Hosts[h].Util; !exclFrom[h] && x > 0 && x < 1 && !busy(st, h) {
			order = append(order, h)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(snap.Hosts[a].Util, snap.Hosts[b].Util) })
	for next := 0; ; {
		for next < len(order) && exclFrom[order[next]] {
			next++
		}
		if next == len(order) {
			break
		}
		u := order[next]
		exclFrom[u] = true
		pl.Exclude(u)
		vms = vms[:0]
		for _, v := range st.VMs(u) {
			if !snap.VMs[v].Migrating() {
				vms = append(vms, v)
			}
		}
		if len(vms) == 0 {
			continue
		}
		byDemand(snap, vms)
		placed = placed[:0]
		ok := true
		for _, v := range vms {
			h := pl.Find(v)
			if h < 0 {
				ok = false
				break
			}
			st.Add(v, h)
			placed = append(placed, mv{v, h})
		}
		if !ok {
			for _, p := range placed {
				st.Remove(p.v, p.h)
			}
			continue
		}
		for _, p := range placed {
			exclFrom[p.h] = true
			plan.Moves = append(plan.Moves, c.move(snap, p.v, p.h, model.PriorityConsolidate, "underload"))
		}
	}
	return plan
}

func (c *Consolidation) move(snap *model.Snapshot, v, h, prio int, rule string) model.MigrationRequest {
	return model.MigrationRequest{
		VMInstanceID: snap.VMs[v].ID,
		TargetHostID: snap.Hosts[h].ID,
		Priority:     prio,
		VM:           v,
		Target:       h,
		Reason: model.Reason{
			Rule:   rule,
			Detail: fmt.Sprintf("%s: %s on host %s; power-aware best fit", c.PolicyName, rule, snap.Hosts[snap.VMs[v].Host].ID),
		},
	}
}

// busy: every VM is migrating out, or one is migrating in (such hosts are not emptied).
func busy(st *cluster.State, h int) bool {
	for _, v := range st.VMs(h) {
		vm := &st.Snap.VMs[v]
		if !vm.Migrating() {
			return false
		}
		if vm.Host != h {
			return true
		}
	}
	return true
}

// byDemand sorts VMs by CPU demand, highest first, keeping ties in order.
func byDemand(snap *model.Snapshot, vms []int) {
	slices.SortStableFunc(vms, func(a, b int) int {
		da, db := snap.VMs[a].Demand.CPU, snap.VMs[b].Demand.CPU
		switch {
		case da > db:
			return -1
		case da < db:
			return 1
		}
		return 0
	})
}

// Static never migrates: CloudSim's dvfs and npa runs. NonPowerAware (npa) keeps
// every host at full power.
type Static struct {
	PolicyName    string
	NonPowerAware bool
}

func (s *Static) Name() string                       { return s.PolicyName }
func (s *Static) Plan(Input) Plan                    { return Plan{} }
func (s *Static) Place(st *cluster.State, v int) int { return placement.FirstFit(st, v) }
