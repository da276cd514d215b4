package trace

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Scale returns a fleet factor times as large as w, for sizing runs: the
// first len(w.VMs) VMs are w's own, unchanged, so factor 1 is w itself. Each
// further VM is a bootstrap draw: a VM of w picked uniformly at random, with
// replacement, whose series are multiplied by one level drawn per VM from a
// log-normal (sigma 0.1) and by a jitter drawn per sample, uniform in
// [0.95, 1.05], so that copies of one VM are alike but not in lockstep.
// CPU and Mem stay fractions within 0..1; Net and Disk stay non-negative.
// Copy i (counting from 0 over the whole fleet) is named "<source ID>~<i>". The same seed gives the same fleet.
func Scale(w *Workload, factor int, seed uint64) (*Workload, error) {
	if factor < 1 {
		return nil, fmt.Errorf("scale: %d must be at least 1", factor)
	}
	if factor == 1 || len(w.VMs) == 0 {
		return w, nil
	}
	out := *w
	out.Name = fmt.Sprintf("%s x%d", w.Name, factor)
	n := len(w.VMs)
	out.VMs = make([]Series, 0, n*factor)
	out.VMs = append(out.VMs, w.VMs...)
	rng := rand.New(rand.NewPCG(seed, 0x5ca1e))
	// One backing array per resource for all copies: a 100x fleet is 100,000
	// series, and one allocation each would cost more than the data.
	l := w.Len()
	var pool [4][]float32
	for k, s := range [4][]float32{w.VMs[0].CPU, w.VMs[0].Mem, w.VMs[0].Net, w.VMs[0].Disk} {
		if s != nil {
			pool[k] = make([]float32, 0, l*n*(factor-1))
		}
	}
	for i := n; i < n*factor; i++ {
		src := &w.VMs[rng.IntN(n)]
		level := math.Exp(0.1 * rng.NormFloat64())
		cp := Series{ID: fmt.Sprintf("%s~%d", src.ID, i), CPUCapacity: src.CPUCapacity, MemCapacity: src.MemCapacity}
		for k, s := range [4][]float32{src.CPU, src.Mem, src.Net, src.Disk} {
			if s == nil {
				continue
			}
			hi := math.Inf(1)
			if k < 2 {
				hi = 1 // fractions of the VM's size
			}
			if pool[k] == nil || cap(pool[k])-len(pool[k]) < len(s) {
				pool[k] = make([]float32, 0, max(len(s), l*1024))
			}
			start := len(pool[k])
			for _, x := range s {
				v := float64(x) * level * (0.95 + 0.1*rng.Float64())
				pool[k] = append(pool[k], float32(min(max(v, 0), hi)))
			}
			dst := pool[k][start:len(pool[k]):len(pool[k])]
			switch k {
			case 0:
				cp.CPU = dst
			case 1:
				cp.Mem = dst
			case 2:
				cp.Net = dst
			case 3:
				cp.Disk = dst
			}
		}
		out.VMs = append(out.VMs, cp)
	}
	return &out, nil
}
