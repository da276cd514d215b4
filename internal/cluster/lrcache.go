package cluster

import "math"

// lrCache keeps, per host, what CloudSim's LR detector reads of it on every
// candidate check of a best-fit search: the longest migration time of its VMs.
// An entry is kept until the host's VM list changes (stale).
type lrCache struct {
	maxMig []float64
	ok     []bool
	// The sums RecentSums reads of the host's own history, valid while sumOK.
	sy, sxy, l1 []float64
	long        []bool // the host's own value at RecentWindow-1 is above 0
	sumOK       []bool
	// The last VM's own sums (a best-fit search asks for one VM on many
	// hosts): lastV is that VM + 1 (0: none); its history does not change.
	lastV          int
	vsy, vsxy, vl1 float64
	vGood          bool
	maxAll         float64 // MaxMigrationSeconds, valid while maxAllOK
	maxAllOK       bool
}

func (st *State) lrStale(h int) {
	if st.lr != nil {
		st.lr.ok[h] = false
		st.lr.sumOK[h] = false
	}
}

func (st *State) lrCache() *lrCache {
	if st.lr == nil {
		n := len(st.Snap.Hosts)
		st.lr = &lrCache{maxMig: make([]float64, n), ok: make([]bool, n),
			sy: make([]float64, n), sxy: make([]float64, n), l1: make([]float64, n), long: make([]bool, n), sumOK: make([]bool, n)}
	}
	return st.lr
}

// RecentWindow is how many of the newest values RecentSums sums: CloudSim's LR
// detector fits its line through them.
const RecentWindow = 10

// RecentSums is, within rounding, the sums a least-squares line through the
// RecentWindow newest values of History(h, v) needs: with y_j the j-th oldest
// of them (j = 0..RecentWindow-1) and x_j = j+1, sy = sum y_j and sxy = sum
// x_j y_j; l1 = sum |y_j| bounds their size. The host's part is kept until its
// VM list changes, v's (weighted as History weighs it) is added, so the sums
// are the host's and v's in exact arithmetic and differ from sums of History's
// rounded values by a few units of rounding times l1. ok says History(h, v) is
// sure to hold at least RecentWindow values and every value is a number; when
// ok is false nothing is said, and a caller computes afresh.
func (st *State) RecentSums(h, v int) (sy, sxy, l1 float64, ok bool) {
	c := st.lrCache()
	if !c.sumOK[h] {
		// The host's own newest values, each summed as History sums it.
		var base [RecentWindow]float64
		capCPU := st.Snap.Hosts[h].Capacity.CPU
		for _, x := range st.on[h] {
			vm := &st.Snap.VMs[x]
			w := vm.Size.CPU / capCPU
			for i, u := range vm.History[:min(len(vm.History), RecentWindow)] {
				base[i] += u * w
			}
		}
		var a, b, m float64
		for j := range RecentWindow {
			y := base[RecentWindow-1-j]
			a += y
			b += float64(j+1) * y
			m += math.Abs(y)
		}
		c.sy[h], c.sxy[h], c.l1[h] = a, b, m
		c.long[h] = st.maxLen >= RecentWindow && base[RecentWindow-1] > 0
		c.sumOK[h] = true
	}
	if !c.long[h] {
		return 0, 0, 0, false
	}
	sy, sxy, l1 = c.sy[h], c.sxy[h], c.l1[h]
	if v >= 0 {
		vm := &st.Snap.VMs[v]
		w := vm.Size.CPU / st.Snap.Hosts[h].Capacity.CPU
		if !(w >= 0) || math.IsInf(w, 0) {
			return 0, 0, 0, false
		}
		if c.lastV != v+1 {
			c.lastV, c.vsy, c.vsxy, c.vl1, c.vGood = v+1, 0, 0, 0, true
			for i, u := range vm.History[:min(len(vm.History), RecentWindow)] {
				// A value below 0 could bring the host's value at
				// RecentWindow-1 to 0 and shorten the history.
				if !(u >= 0) || math.IsInf(u, 0) {
					c.vGood = false
					break
				}
				x := float64(RecentWindow - i) // the newest is x = RecentWindow
				c.vsy += u
				c.vsxy += x * u
				c.vl1 += u
			}
		}
		if !c.vGood {
			return 0, 0, 0, false
		}
		sy, sxy, l1 = sy+w*c.vsy, sxy+w*c.vsxy, l1+w*c.vl1
	}
	if math.IsNaN(sy+sxy+l1) || math.IsInf(sy+sxy+l1, 0) {
		return 0, 0, 0, false
	}
	return sy, sxy, l1, true
}

// HostMaxMigrationSeconds is the largest MigrationSeconds(x, h) over the VMs x
// on h (0 for an empty host), folded with max from 0 in placement order as a
// loop over VMs(h) does, so it is that loop's value; it is kept until h's VM
// list changes.
func (st *State) HostMaxMigrationSeconds(h int) float64 {
	c := st.lrCache()
	if !c.ok[h] {
		m := 0.0
		for _, x := range st.on[h] {
			m = max(m, st.MigrationSeconds(x, h))
		}
		c.maxMig[h], c.ok[h] = m, true
	}
	return c.maxMig[h]
}

// RecentHistory fills dst with the first len(dst) values of History(h, v)
// (newest first) and reports whether History(h, v) has that many; when it has
// fewer, dst is left unspecified. Each value is the one History gives (the
// host's cached sum plus v's weighted value, the same expression), but only the
// values asked for are formed: whether the history is long enough is settled at
// the first value from len(dst)-1 on that is not 0, usually that very one.
func (st *State) RecentHistory(h, v int, dst []float64) bool {
	k := len(dst)
	if st.hist[h] == nil {
		st.History(h, -1) // fills the host's cached sum
	}
	base := st.hist[h]
	if len(base) < k || k == 0 {
		return k == 0
	}
	var vh []float64
	var w float64
	if v >= 0 {
		vm := &st.Snap.VMs[v]
		w = vm.Size.CPU / st.Snap.Hosts[h].Capacity.CPU
		vh = vm.History
	}
	at := func(i int) float64 {
		x := base[i]
		if i < len(vh) {
			x += vh[i] * w
		}
		return x
	}
	long := false
	for i := k - 1; i < len(base); i++ {
		if at(i) != 0 {
			long = true
			break
		}
	}
	if !long {
		return false
	}
	for i := range dst {
		dst[i] = at(i)
	}
	return true
}

// MaxMigrationSeconds is at least MigrationSeconds(v, h) for every VM v and
// host h of the snapshot (+Inf when it cannot tell); it is worked out once.
func (st *State) MaxMigrationSeconds() float64 {
	c := st.lrCache()
	if !c.maxAllOK {
		bwMin := math.Inf(1)
		for h := range st.Snap.Hosts {
			bw := st.Snap.Hosts[h].Capacity.Net / 2 / 1000
			if math.IsNaN(bw) {
				bwMin = math.NaN()
				break
			}
			if bw > 0 {
				bwMin = min(bwMin, bw)
			}
		}
		m := 0.0
		for v := range st.vmMigSecs {
			s := st.vmMigSecs[v]
			if !(s > 0) {
				if math.IsNaN(s) {
					m = math.Inf(1)
					break
				}
				s = st.vmMem[v] / bwMin // a division by a smaller bw gives no less
			}
			if math.IsNaN(s) {
				m = math.Inf(1)
				break
			}
			m = max(m, s)
		}
		c.maxAll, c.maxAllOK = m, true
	}
	return c.maxAll
}
