// Package trace reads per-VM utilisation traces (PlanetLab, Bitbrains, a generic CSV)
// into one shape, and carries the embedded PlanetLab sample that the defaults run on.
package trace

// Workload is a set of per-VM time series on one regular grid:
// sample i of every series is at Start + i*Step seconds.
type Workload struct {
	Name  string   // e.g. "planetlab:20110303" or "bitbrains:2013-7"
	Kind  string   // "planetlab", "bitbrains" or "csv"
	Step  float64  // seconds between samples
	Start int64    // Unix seconds of sample 0; 0 when the format has no clock (PlanetLab)
	VMs   []Series // sorted by ID in the order the format defines (PlanetLab: file name)
	// Repaired counts samples that were missing (filled) or duplicated (merged) while loading.
	Repaired int
}

// Series is one VM's demand. CPU and Mem are fractions of what the VM was provisioned
// with (0..1); Net and Disk are absolute rates in KB/s. Series that a format lacks are nil.
type Series struct {
	ID   string
	CPU  []float32
	Mem  []float32
	Net  []float32
	Disk []float32
	// Provisioned capacity when the format gives it (Bitbrains): CPU in MHz, memory in MB.
	CPUCapacity float64
	MemCapacity float64
}

// Len is the number of samples on the grid.
func (w *Workload) Len() int {
	if len(w.VMs) == 0 {
		return 0
	}
	return len(w.VMs[0].CPU)
}
