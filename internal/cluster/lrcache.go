package cluster

// lrCache keeps, per host, what CloudSim's LR detector reads of it on every
// candidate check of a best-fit search: the longest migration time of its VMs.
// An entry is kept until the host's VM list changes (stale).
type lrCache struct {
	maxMig []float64
	ok     []bool
}

func (st *State) lrStale(h int) {
	if st.lr != nil {
		st.lr.ok[h] = false
	}
}

// HostMaxMigrationSeconds is the largest MigrationSeconds(x, h) over the VMs x
// on h (0 for an empty host), folded with max from 0 in placement order as a
// loop over VMs(h) does, so it is that loop's value; it is kept until h's VM
// list changes.
func (st *State) HostMaxMigrationSeconds(h int) float64 {
	c := st.lr
	if c == nil {
		c = &lrCache{maxMig: make([]float64, len(st.Snap.Hosts)), ok: make([]bool, len(st.Snap.Hosts))}
		st.lr = c
	}
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
