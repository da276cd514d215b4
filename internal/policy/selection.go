package policy

import "github.com/headroom/headroom/internal/cluster"

// MinimumMigrationTime picks the VM on h with the least memory that is not already
// migrating (first in placement order on ties), or -1.
func MinimumMigrationTime(st *cluster.State, h int) int {
	best, bestMem := -1, 0.0
	for _, v := range st.VMs(h) {
		vm := &st.Snap.VMs[v]
		if vm.Migrating() {
			continue
		}
		if best < 0 || vm.Size.Mem < bestMem {
			best, bestMem = v, vm.Size.Mem
		}
	}
	return best
}
