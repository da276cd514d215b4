package placement

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// Context is what the placement steps read: the what-if cluster, the bound to check
// capacity at, and the rules indexed by VM.
type Context struct {
	St *cluster.State
	// Z is the normal quantile of the confidence at which capacity must hold.
	Z float64
	// Target is the share of capacity a host may be filled to at that bound.
	Target float64
	// Resources are checked at the bound over the horizon and scored; NewContext
	// sets CPU alone. Limits is the share of each one's capacity a host may be
	// filled to at the bound (NewContext: Target for all).
	Resources []model.Resource
	Limits    model.Resources
	// Last is the last horizon step checked and scored; -1 (NewContext) means all.
	Last int
	// Peaks: the host must also have room, in every tracked resource, for any one
	// of its VMs (v included) to return to its recent peak while the others stay
	// at their need now. Optional moves (consolidation) set it: a VM that reached
	// a level in the last week can reach it again, and no forecast sees a job's
	// onset coming.
	Peaks bool
	// ExcludeAlso, when set, names more hosts a selection treats as excluded,
	// exactly as if they were in its excluded mask: it is asked only of hosts
	// that mask leaves in, in index order, so a rule that excludes per VM (core's
	// memory-peaks clause) costs nothing on hosts already excluded and needs no
	// mask rebuilt over the fleet for every selection.
	ExcludeAlso func(v, h int) bool
	rules       map[int][]ruleRef
	hostIx      map[string]int
	// The headroom of the last (VM, host) pair: the capacity filter and two scorers
	// ask for it in turn.
	memoV, memoH int
	memo         float64
	memoR        model.Resource
	// rejectedOn is the resource the capacity filter last rejected a host on.
	rejectedOn model.Resource
	// explain: filters spell out their reasons (a selection without it only counts).
	explain bool
	// The selected VM's moments per resource and step, the same against every host.
	vmFor       int
	vmMu, vmVar [4][]float64
	vmPeak      [4]float64 // its PeakExcess per resource
	vmNeed      model.Resources
	// Its largest mean and variance per resource over steps 0..last (see
	// cannotWin), worked out by a selection that prunes.
	vmMaxMu, vmMaxVar [4]float64
	// checkedH is the host whose room-now and quick checks the selection has
	// just made and passed (-1: none), so that the capacity filter goes straight
	// to its full pass there.
	checkedH int
	// Empty hosts by class (see hostClass), fetched on the first selection.
	classes []int32
	nClass  int
	info    *hostInfo
	empty   emptySeen
	reps    []int32 // per selection: the first empty host of each class (selectView)
}

func (c *Context) hostClasses() ([]int32, int) {
	if c.classes == nil {
		c.info = infoOf(c.St)
		c.classes, c.nClass = c.info.ids, c.info.n
	}
	return c.classes, c.nClass
}

type ruleRef struct {
	rule    *model.Rule
	members []int // VM indices
	hosts   []bool
}

// NewContext indexes the snapshot's rules. Rules that name unknown VMs or hosts keep
// the members that exist.
func NewContext(st *cluster.State, z, target float64) *Context {
	c := &Context{St: st, Z: z, Target: target, rules: map[int][]ruleRef{}, memoV: -1, vmFor: -1, checkedH: -1,
		Resources: []model.Resource{model.CPU}, Limits: model.Resources{CPU: target, Mem: target, Net: target, Disk: target}, Last: -1}
	s := st.Snap
	if len(s.Rules) == 0 {
		// The host index serves the rules alone; building it per Context made the
		// initial placement (one Context per VM) quadratic in the fleet.
		return c
	}
	c.hostIx = make(map[string]int, len(s.Hosts))
	for h := range s.Hosts {
		c.hostIx[s.Hosts[h].ID] = h
	}
	vmIx := make(map[string]int, len(s.VMs))
	for v := range s.VMs {
		vmIx[s.VMs[v].ID] = v
	}
	for i := range s.Rules {
		r := &s.Rules[i]
		ref := ruleRef{rule: r}
		for _, id := range r.VMs {
			if v, ok := vmIx[id]; ok {
				ref.members = append(ref.members, v)
			}
		}
		if len(r.Hosts) > 0 {
			ref.hosts = make([]bool, len(s.Hosts))
			for _, id := range r.Hosts {
				if h, ok := c.hostIx[id]; ok {
					ref.hosts[h] = true
				}
			}
		}
		for _, v := range ref.members {
			c.rules[v] = append(c.rules[v], ref)
		}
	}
	return c
}

// Filter rejects hosts; Reject returns "" to pass or the reason.
type Filter interface {
	Name() string
	Reject(c *Context, v, h int) string
}

// Scorer rates a feasible host in [0, 1], higher is better.
type Scorer interface {
	Name() string
	Score(c *Context, v, h int) float64
}

// Weighted is a scorer with its weight.
type Weighted struct {
	Scorer
	Weight float64
}

// Chain is host selection as small named steps: every filter, then the weighted
// mean of the scorers (after Nomad's feasibility-then-rank iterators).
type Chain struct {
	Filters []Filter
	Scorers []Weighted
}

// Candidate is one host's fate in a selection, for --explain.
type Candidate struct {
	Host     int    `json:"host"`
	HostID   string `json:"host_id"`
	Rejected string `json:"rejected_by,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Binding is the resource that decided: the one the capacity filter rejected
	// the host on, or for a feasible host the one with the least room left.
	Binding string             `json:"binding,omitempty"`
	Scores  map[string]float64 `json:"scores,omitempty"`
	Total   float64            `json:"total,omitempty"`
}

var filters = map[string]Filter{
	"capacity":      capacityFilter{},
	"anti-affinity": antiAffinityFilter{},
	"affinity":      affinityFilter{},
	"host-affinity": hostAffinityFilter{},
}

var scorers = map[string]Scorer{
	"headroom":       headroomScorer{},
	"packing":        packingScorer{},
	"affinity":       affinityScorer{},
	"migration-cost": migrationCostScorer{},
	"power":          powerScorer{},
}

// StepNames lists the known filters and scorers.
func StepNames() (fs, ss []string) {
	for n := range filters {
		fs = append(fs, n)
	}
	for n := range scorers {
		ss = append(ss, n)
	}
	sort.Strings(fs)
	sort.Strings(ss)
	return fs, ss
}

// NewChain builds a chain from step names, naming any it does not know.
func NewChain(filterNames []string, scorerNames []string, weights []float64) (*Chain, error) {
	c := &Chain{}
	fs, ss := StepNames()
	for _, n := range filterNames {
		f, ok := filters[n]
		if !ok {
			return nil, fmt.Errorf("placement.filters: unknown filter %q (known: %s)", n, strings.Join(fs, ", "))
		}
		c.Filters = append(c.Filters, f)
	}
	for i, n := range scorerNames {
		s, ok := scorers[n]
		if !ok {
			return nil, fmt.Errorf("placement.scorers: unknown scorer %q (known: %s)", n, strings.Join(ss, ", "))
		}
		if weights[i] < 0 {
			return nil, fmt.Errorf("placement.scorers: %s weight %g must not be negative", n, weights[i])
		}
		c.Scorers = append(c.Scorers, Weighted{s, weights[i]})
	}
	return c, nil
}

// Select returns the best host for v among hosts not excluded, or -1, and how many
// hosts each filter rejected. With explain it also returns every host's record.
func (ch *Chain) Select(c *Context, v int, excluded []bool, explain bool) (int, []Candidate) {
	return ch.selectHost(c, v, excluded, explain, true)
}

// selectHost is Select; with skipEmpty it scores only the first empty host of each
// class (see hostClass), which chooses the same host as scoring them all. A VM
// with rules is scored on every host: rules name hosts.
func (ch *Chain) selectHost(c *Context, v int, excluded []bool, explain, skipEmpty bool) (int, []Candidate) {
	best, bestScore := -1, math.Inf(-1)
	var out []Candidate
	counts := make([]int, len(ch.Filters))
	c.memoV = -1 // the what-if may have changed since the last selection
	c.explain = explain
	c.prepare(v)
	wsum := 0.0
	for _, s := range ch.Scorers {
		wsum += s.Weight
	}
	var classes []int32
	if skipEmpty && !explain && len(c.rules[v]) == 0 {
		var n int
		classes, n = c.hostClasses()
		c.empty.reset(n)
	}
	capIx := -1
	if skipEmpty {
		capIx = ch.prunable(c, v, explain)
	}
	c.checkedH = -1
	st := c.St
	at := st.HostOf(v)
	n := len(st.Snap.Hosts)
	if classes != nil && !explain {
		return ch.selectView(c, v, excluded, counts, capIx, wsum)
	}
	skip := excludedBytes(excluded, n)
	for h := 0; h < n; h++ {
		// Excluded hosts first: in consolidation most hosts are (every empty
		// one), and the one-host search excludes all others.
		if excluded != nil && excluded[h] {
			if explain {
				out = append(out, Candidate{Host: h, HostID: st.Snap.Hosts[h].ID, Rejected: "excluded", Reason: "source or being emptied"})
				continue
			}
			j := bytes.IndexByte(skip[h:], 0)
			if j < 0 {
				break
			}
			h += j // the next host not excluded
		}
		if c.ExcludeAlso != nil && c.ExcludeAlso(v, h) {
			if explain {
				out = append(out, Candidate{Host: h, HostID: st.Snap.Hosts[h].ID, Rejected: "excluded", Reason: "source or being emptied"})
			}
			continue
		}
		class := int32(-1)
		if classes != nil && len(st.VMs(h)) == 0 {
			class = classes[h]
			if !c.empty.first(class) {
				// Same fate as the first of its class: rejected by the same filter,
				// or a score that ties and so loses to the lower index.
				if i := c.empty.rejected[class]; i >= 0 {
					counts[i]++
				}
				continue
			}
		}
		var cand Candidate
		if explain {
			cand = Candidate{Host: h, HostID: st.Snap.Hosts[h].ID}
		}
		if h == at {
			if explain {
				cand.Rejected, cand.Reason = "excluded", "the VM is already there"
				out = append(out, cand)
			}
			continue
		}
		if capIx >= 0 {
			// The capacity filter's room-now and quick checks, as it makes them.
			// The other filters pass a VM without rules, so a host that fails
			// is counted where the chain would count it.
			if _, ok := st.NoRoomFor(v, h, c.vmNeed); !ok || c.quickReject(v, h) {
				counts[capIx]++
				if class >= 0 {
					c.empty.rejected[class] = capIx
				}
				continue
			}
			// A host certain to pass whose score cannot reach the best so far is
			// neither counted nor chosen by the full checks either.
			if best >= 0 && ch.cannotWin(c, v, h, bestScore, wsum) {
				continue
			}
			c.checkedH = h
		}
		rejected := false
		for i, f := range ch.Filters {
			if why := f.Reject(c, v, h); why != "" {
				rejected = true
				counts[i]++
				if class >= 0 {
					c.empty.rejected[class] = i
				}
				if explain {
					cand.Rejected, cand.Reason = f.Name(), why
					if _, ok := f.(capacityFilter); ok {
						cand.Binding = c.rejectedOn.String()
					}
				}
				break
			}
		}
		if rejected {
			if explain {
				out = append(out, cand)
			}
			continue
		}
		total := 0.0
		if explain {
			cand.Scores = map[string]float64{}
		}
		for _, s := range ch.Scorers {
			x := s.Score(c, v, h)
			total += s.Weight * x
			if explain {
				cand.Scores[s.Name()] = round4(x)
			}
		}
		if wsum > 0 {
			total /= wsum
		}
		if explain {
			cand.Total = round4(total)
			_, r := headroom(c, v, h)
			cand.Binding = r.String()
			out = append(out, cand)
		}
		if total > bestScore {
			best, bestScore = h, total
		}
	}
	if !explain {
		// Without a full explanation keep one record per filter that rejected hosts.
		for i, f := range ch.Filters {
			if counts[i] > 0 {
				out = append(out, Candidate{Host: -1, HostID: fmt.Sprintf("%d hosts", counts[i]), Rejected: f.Name(), Reason: "rejected"})
			}
		}
	}
	return best, out
}

// selectView is selectHost without explain for a VM without rules, through the
// State's fleetView: it visits the running hosts not excluded and the first
// empty host of each class not excluded, in index order, with the checks the
// scan of every host makes on them; the other empty hosts of a class whose
// first was rejected are counted as that scan counts them, and the rest of the
// fleet is not read. Same choice, same counts.
func (ch *Chain) selectView(c *Context, v int, excluded []bool, counts []int, capIx int, wsum float64) (int, []Candidate) {
	st := c.St
	fv := c.info.view(st)
	out := func(h int32) bool {
		return (excluded != nil && excluded[h]) || (c.ExcludeAlso != nil && c.ExcludeAlso(v, int(h)))
	}
	// The first empty host of each class that is not excluded.
	reps := c.reps[:0]
	for _, k := range fv.active {
		for _, h := range fv.empties[k] {
			if !out(h) {
				reps = append(reps, h)
				break
			}
		}
	}
	slices.Sort(reps)
	c.reps = reps
	at := st.HostOf(v)
	best, bestScore := -1, math.Inf(-1)
	share := c.vmNeed.CPU / float64(max(st.Snap.VMs[v].VCPU, 1)) // as NoRoomFor works it out
	// visit makes the checks of the scan of every host on h. also is whether
	// ExcludeAlso is still to be asked of h: it is asked only where it decides
	// something, since a host it excludes is neither counted nor chosen, and one
	// that cannotWin passes over is neither either.
	visit := func(h int, class int32, also bool) {
		if class >= 0 {
			c.empty.first(class)
		}
		if h == at {
			return
		}
		if capIx >= 0 {
			// NoRoomFor, quickReject and cannotWin on the host's compact record.
			rec := &fv.rec[h]
			if !rec.roomFor(c.vmNeed, share) || c.quickRejectRec(fv, rec, h) {
				if also && c.ExcludeAlso(v, h) {
					return
				}
				counts[capIx]++
				if class >= 0 {
					c.empty.rejected[class] = capIx
				}
				return
			}
			if best >= 0 && ch.cannotWinRec(c, fv, rec, v, h, bestScore, wsum) {
				return
			}
			if also && c.ExcludeAlso(v, h) {
				return
			}
			c.checkedH = h
		} else if also && c.ExcludeAlso(v, h) {
			return
		}
		for i, f := range ch.Filters {
			if why := f.Reject(c, v, h); why != "" {
				counts[i]++
				if class >= 0 {
					c.empty.rejected[class] = i
				}
				return
			}
		}
		total := 0.0
		for _, s := range ch.Scorers {
			total += s.Weight * s.Score(c, v, h)
		}
		if wsum > 0 {
			total /= wsum
		}
		if total > bestScore {
			best, bestScore = h, total
		}
	}
	j := 0
	for _, h := range fv.running {
		for j < len(reps) && reps[j] < h {
			visit(int(reps[j]), c.classes[reps[j]], false) // out(reps[j]) is false
			j++
		}
		if excluded != nil && excluded[h] {
			continue
		}
		visit(int(h), -1, c.ExcludeAlso != nil)
	}
	for ; j < len(reps); j++ {
		visit(int(reps[j]), c.classes[reps[j]], false)
	}
	// The other empty hosts of a rejected class fare as its first.
	for _, r := range reps {
		k := c.classes[r]
		i := c.empty.rejected[k]
		if i < 0 {
			continue
		}
		for _, h := range fv.empties[k] {
			if h > r && !out(h) {
				counts[i]++
			}
		}
	}
	var cands []Candidate
	for i, f := range ch.Filters {
		if counts[i] > 0 {
			cands = append(cands, Candidate{Host: -1, HostID: fmt.Sprintf("%d hosts", counts[i]), Rejected: f.Name(), Reason: "rejected"})
		}
	}
	return best, cands
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// RejectionSummary condenses candidates into "filter: n hosts" counts, for the
// "no suitable host available" log line.
func RejectionSummary(cands []Candidate) string {
	n := map[string]int{}
	for _, c := range cands {
		switch {
		case c.Rejected == "":
		case c.Host < 0: // a per-filter count from a selection without explain
			var k int
			fmt.Sscanf(c.HostID, "%d", &k)
			n[c.Rejected] += k
		default:
			n[c.Rejected]++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d hosts", k, n[k])
	}
	return strings.Join(parts, ", ")
}

// capacityFilter: the host has room now (cores, scheduler, memory, network, disk),
// and for every tracked resource the VM's predicted demand plus the host's stays under
// its limit x capacity at the bound at every horizon step, so VMs whose peaks
// coincide do not land together. A capacity of 0 means unknown and never binds.
type capacityFilter struct{}

func (capacityFilter) Name() string { return "capacity" }

func (capacityFilter) Reject(c *Context, v, h int) string {
	st := c.St
	if c.vmFor != v {
		c.prepare(v)
	}
	if c.checkedH == h && !c.explain {
		c.checkedH = -1 // the selection has made the checks below (prunable)
	} else {
		if r, ok := st.NoRoomFor(v, h, c.vmNeed); !ok {
			c.rejectedOn = r
			if !c.explain {
				return r.String()
			}
			return fmt.Sprintf("%s: no room now", r)
		}
		if !c.explain && c.quickReject(v, h) {
			return c.rejectedOn.String() // only counted
		}
	}
	// The headroom scorers read the same bounds, so the pass also works out
	// headroomOf (the same expressions in the same order) for a host that passes.
	left, bind := 1.0, model.CPU
	last := c.lastStep()
	for _, r := range c.Resources {
		cp := st.Snap.Hosts[h].Capacity.Get(r)
		if cp <= 0 {
			continue
		}
		limit := c.Limits.Get(r) * cp
		m := st.HostMoments(r, h)
		vmMu, vmVar := c.vmMu[r][:last+1], c.vmVar[r][:last+1]
		for s := range vmMu {
			mu, variance := m[2*s]+vmMu[s], m[2*s+1]+vmVar[s]
			sd := math.Sqrt(variance)
			if b := mu + c.Z*sd; b > limit {
				c.rejectedOn = r
				if !c.explain {
					return r.String() // only counted
				}
				return fmt.Sprintf("%s at step %d: bound %.0f > %.0f", r, s, b, limit)
			}
			if l := (cp - mu - c.Z*sd) / cp; l < left {
				left, bind = l, r
			}
		}
	}
	if c.Peaks {
		if why := c.rejectPeak(v, h); why != "" {
			return why
		}
	}
	c.memoV, c.memoH = v, h
	c.memo, c.memoR = max(left, 0), bind
	return ""
}

// quickReject makes two of the capacity filter's checks, each exactly as the
// full pass makes it, on the host's Summary alone: the peak rule, and the bound
// at the step where the host's mean is largest. A host either fails there
// (rejected, as the full pass would reject it) or goes on to the full pass. A
// selection without explain only counts rejections, so which check rejects does
// not matter; most rejected hosts of a large fleet are settled here without
// reading their moments or their VMs.
func (c *Context) quickReject(v, h int) bool {
	st := c.St
	last := c.lastStep()
	for _, r := range c.Resources {
		cp := st.Snap.Hosts[h].Capacity.Get(r)
		if cp <= 0 {
			continue
		}
		x := st.Summary(r, h)
		if c.Peaks && x.Mu0+c.vmMu[r][0]+max(c.vmPeak[r], x.Peak) > cp {
			c.rejectedOn = r
			return true
		}
		if s := x.WorstStep; s <= last {
			mu, variance := x.WorstMu+c.vmMu[r][s], x.WorstVar+c.vmVar[r][s]
			if mu+c.Z*math.Sqrt(variance) > c.Limits.Get(r)*cp {
				c.rejectedOn = r
				return true
			}
		}
	}
	return false
}

// prunable reports where the capacity filter is in the chain (-1: the
// selection does not prune) when a selection of v may pass over hosts the way
// cannotWin allows: without explain (which records every host), for a VM
// without rules (so every filter but capacity passes it), with only the
// package's own filters and scorers (whose dependence on the headroom cannotWin
// knows) and a confidence quantile of at least 0. It also works out v's largest
// moments over the steps checked.
func (ch *Chain) prunable(c *Context, v int, explain bool) int {
	if explain || len(c.rules[v]) > 0 || !(c.Z >= 0) {
		return -1
	}
	capIx := -1
	for i, f := range ch.Filters {
		switch f.(type) {
		case capacityFilter:
			if capIx < 0 {
				capIx = i
			}
		case antiAffinityFilter, affinityFilter, hostAffinityFilter:
		default:
			return -1
		}
	}
	for _, s := range ch.Scorers {
		switch s.Scorer.(type) {
		case headroomScorer, packingScorer, affinityScorer, migrationCostScorer, powerScorer:
		default:
			return -1
		}
	}
	last := c.lastStep()
	for _, r := range c.Resources {
		mu, variance := math.Inf(-1), math.Inf(-1)
		for s := 0; s <= last; s++ {
			mu, variance = max(mu, c.vmMu[r][s]), max(variance, c.vmVar[r][s])
		}
		c.vmMaxMu[r], c.vmMaxVar[r] = mu, variance
	}
	return capIx
}

// pruneSlack covers rounding in cannotWin's bounds (scores are within 0..1;
// bounds and room are in the resource's units): far above any rounding error,
// far below any difference a choice turns on.
const pruneSlack = 1e-9

// cannotWin reports whether host h, which has passed the capacity filter's
// room-now and quick checks for v, is certain to pass its full pass and still
// scores below best, so that the full checks would neither count it nor choose
// it. With every step's mean at most the host's largest plus v's largest (MaxMu
// + vmMaxMu), and likewise the variance, every step's bound is at most the bound
// made of those (rounding is monotone), and the headroom the pass leaves is at
// least the room that bound leaves. The headroom and packing scores are linear
// in the headroom, so the total is largest at one end of its range; the other
// scorers do not read it and are asked as they are.
func (ch *Chain) cannotWin(c *Context, v, h int, best, wsum float64) bool {
	ub, ok := ch.scoreBound(c, v, h, wsum)
	return ok && ub+pruneSlack < best
}

// scoreBound is cannotWin's upper bound of h's total score for v, and whether h
// is certain to pass the capacity filter's full pass (else the bound means
// nothing).
func (ch *Chain) scoreBound(c *Context, v, h int, wsum float64) (float64, bool) {
	st := c.St
	lo := 1.0
	for _, r := range c.Resources {
		cp := st.Snap.Hosts[h].Capacity.Get(r)
		if cp <= 0 {
			continue
		}
		x := st.Summary(r, h)
		mu := x.MaxMu + c.vmMaxMu[r]
		zsd := c.Z * math.Sqrt(x.MaxVar+c.vmMaxVar[r])
		b, limit := mu+zsd, c.Limits.Get(r)*cp
		if !(b+pruneSlack*(math.Abs(b)+math.Abs(limit)) <= limit) {
			return 0, false // not certain to pass
		}
		l := (cp - mu - zsd) / cp
		if !(l >= -1e300) {
			return 0, false
		}
		lo = min(lo, l-pruneSlack)
	}
	lo = max(lo, 0)
	empty := len(st.VMs(h)) == 0
	// The total at the headroom x is rest + k*x (over wsum), k the headroom's
	// weight less half the packing weight on a running host; it is largest at
	// x = lo when k < 0, else at x = 1.
	rest, k := 0.0, 0.0
	for _, s := range ch.Scorers {
		switch s.Scorer.(type) {
		case headroomScorer:
			k += s.Weight
		case packingScorer:
			if !empty {
				rest += s.Weight
				k -= 0.5 * s.Weight // 0.5 + 0.5*(1-x) for x in 0..1
			}
		case affinityScorer:
			rest += s.Weight * 0.5 // a VM without rules (prunable)
		case migrationCostScorer:
			rest += s.Weight / float64(1+st.Incoming(h))
		default:
			rest += s.Weight * s.Score(c, v, h)
		}
	}
	x := 1.0
	if k < 0 {
		x = lo
	}
	ub := rest + k*x
	if wsum > 0 {
		ub /= wsum
	}
	return ub, true
}

// excludedBytes is excluded[:n] read as bytes (a bool is one byte, 0 or 1), so
// that a run of excluded hosts is passed over by one bytes.IndexByte; nil for nil.
func excludedBytes(excluded []bool, n int) []byte {
	if excluded == nil {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(excluded))), len(excluded))[:n]
}

// rejectPeak is the Peaks rule: the host's need now with v, plus the largest
// excess of one VM's recent peak over its need, must stay within capacity.
func (c *Context) rejectPeak(v, h int) string {
	st := c.St
	for _, r := range c.Resources {
		cp := st.Snap.Hosts[h].Capacity.Get(r)
		if cp <= 0 {
			continue
		}
		if c.vmFor != v {
			c.prepare(v)
		}
		// HostMomentOf(r, h, v, 0) and PeakExcess(r, v) from what prepare read.
		now := st.HostMoments(r, h)[0] + c.vmMu[r][0]
		ex := max(c.vmPeak[r], st.HostPeakExcess(r, h))
		if now+ex > cp {
			c.rejectedOn = r
			if !c.explain {
				return r.String()
			}
			return fmt.Sprintf("%s: need now %.0f + a VM's return to its recent peak %.0f > capacity %.0f", r, now, ex, cp)
		}
	}
	return ""
}

// lastStep is the last step to check: the forecasts' last, or Last if sooner.
func (c *Context) lastStep() int {
	if n := c.St.Steps(); c.Last < 0 || c.Last > n {
		return n
	}
	return c.Last
}

// prepare caches v's moments for every tracked resource and step.
func (c *Context) prepare(v int) {
	n := c.St.Steps() + 1
	for _, r := range c.Resources {
		if cap(c.vmMu[r]) < n {
			c.vmMu[r], c.vmVar[r] = make([]float64, n), make([]float64, n)
		}
		c.vmMu[r], c.vmVar[r] = c.vmMu[r][:n], c.vmVar[r][:n]
		for s := range n {
			c.vmMu[r][s], c.vmVar[r][s] = c.St.VMMomentOf(r, v, s)
		}
		c.vmPeak[r] = c.St.PeakExcess(r, v)
	}
	c.vmNeed = c.St.Need(v)
	c.vmFor = v
}

// withVM is h's moments of r at step s with v added.
func (c *Context) withVM(r model.Resource, h, v, s int) (mu, variance float64) {
	if c.vmFor != v {
		c.prepare(v)
	}
	mu, variance = c.St.HostMomentOf(r, h, -1, s)
	return mu + c.vmMu[r][s], variance + c.vmVar[r][s]
}

// headroom is the smallest share of capacity left at the bound over the horizon in
// any tracked resource, and that resource: the dominant one, which packing fills.
func headroom(c *Context, v, h int) (float64, model.Resource) {
	if c.memoV == v && c.memoH == h {
		return c.memo, c.memoR
	}
	c.memoV, c.memoH = v, h
	c.memo, c.memoR = headroomOf(c, v, h)
	return c.memo, c.memoR
}

func headroomOf(c *Context, v, h int) (float64, model.Resource) {
	st := c.St
	left, bind := 1.0, model.CPU
	for _, r := range c.Resources {
		cp := st.Snap.Hosts[h].Capacity.Get(r)
		if cp <= 0 {
			continue
		}
		for s := 0; s <= c.lastStep(); s++ {
			mu, variance := c.withVM(r, h, v, s)
			if l := (cp - mu - c.Z*math.Sqrt(variance)) / cp; l < left {
				left, bind = l, r
			}
		}
	}
	return max(left, 0), bind
}

type headroomScorer struct{}

func (headroomScorer) Name() string { return "headroom" }
func (headroomScorer) Score(c *Context, v, h int) float64 {
	x, _ := headroom(c, v, h)
	return x
}

// packingScorer prefers hosts already running VMs, and fuller ones, so fewer hosts stay on.
type packingScorer struct{}

func (packingScorer) Name() string { return "packing" }

func (packingScorer) Score(c *Context, v, h int) float64 {
	if len(c.St.VMs(h)) == 0 {
		return 0
	}
	x, _ := headroom(c, v, h)
	return 0.5 + 0.5*min(1-x, 1)
}

// powerScorer prefers the smallest rise in power (CloudSim's best-fit criterion).
type powerScorer struct{}

func (powerScorer) Name() string { return "power" }

func (powerScorer) Score(c *Context, v, h int) float64 {
	p := &c.St.Snap.Hosts[h].Power
	if p[10] == 0 {
		return 0.5
	}
	d := PowerDelta(c.St, v, h)
	return max(0, 1-d/p[10])
}

// migrationCostScorer prefers targets with fewer copies already coming in, since
// those share the target's link.
type migrationCostScorer struct{}

func (migrationCostScorer) Name() string { return "migration-cost" }

func (migrationCostScorer) Score(c *Context, v, h int) float64 {
	return 1 / float64(1+c.St.Incoming(h))
}

func onHost(c *Context, x, h int) bool { return slices.Contains(c.St.VMs(h), x) }

type antiAffinityFilter struct{}

func (antiAffinityFilter) Name() string { return "anti-affinity" }

func (antiAffinityFilter) Reject(c *Context, v, h int) string {
	for _, r := range c.rules[v] {
		if r.rule.Kind != model.AntiAffinity || !r.rule.Must {
			continue
		}
		for _, x := range r.members {
			if x != v && onHost(c, x, h) {
				return fmt.Sprintf("rule %s: %s is there", r.rule.Name, c.St.Snap.VMs[x].ID)
			}
		}
	}
	return ""
}

type affinityFilter struct{}

func (affinityFilter) Name() string { return "affinity" }

// Reject: a must-affinity VM goes where its placed partners are.
func (affinityFilter) Reject(c *Context, v, h int) string {
	for _, r := range c.rules[v] {
		if r.rule.Kind != model.Affinity || !r.rule.Must {
			continue
		}
		for _, x := range r.members {
			if x != v && c.St.HostOf(x) >= 0 && c.St.HostOf(x) != h {
				return fmt.Sprintf("rule %s: %s is on %s", r.rule.Name, c.St.Snap.VMs[x].ID, c.St.Snap.Hosts[c.St.HostOf(x)].ID)
			}
		}
	}
	return ""
}

type hostAffinityFilter struct{}

func (hostAffinityFilter) Name() string { return "host-affinity" }

func (hostAffinityFilter) Reject(c *Context, v, h int) string {
	for _, r := range c.rules[v] {
		if !r.rule.Must || r.hosts == nil {
			continue
		}
		switch r.rule.Kind {
		case model.HostAffinity:
			if !r.hosts[h] {
				return fmt.Sprintf("rule %s: host not in %v", r.rule.Name, r.rule.Hosts)
			}
		case model.HostAntiAffinity:
			if r.hosts[h] {
				return fmt.Sprintf("rule %s: host excluded", r.rule.Name)
			}
		}
	}
	return ""
}

// affinityScorer rewards should-affinity partners on the host and penalises
// should-anti-affinity ones; 0.5 is neutral.
type affinityScorer struct{}

func (affinityScorer) Name() string { return "affinity" }

func (affinityScorer) Score(c *Context, v, h int) float64 {
	score, n := 0.0, 0
	for _, r := range c.rules[v] {
		if r.rule.Must {
			continue
		}
		switch r.rule.Kind {
		case model.Affinity, model.AntiAffinity:
			for _, x := range r.members {
				if x == v {
					continue
				}
				n++
				if onHost(c, x, h) == (r.rule.Kind == model.Affinity) {
					score++
				}
			}
		case model.HostAffinity, model.HostAntiAffinity:
			if r.hosts != nil {
				n++
				if r.hosts[h] == (r.rule.Kind == model.HostAffinity) {
					score++
				}
			}
		}
	}
	if n == 0 {
		return 0.5
	}
	return score / float64(n)
}
