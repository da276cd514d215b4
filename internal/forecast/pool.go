package forecast

import (
	"math"
	"sync"
	"sync/atomic"
)

// The fleet's prior on the blend's weights ("pooling across VMs").
//
// A series weighs its blend's components by exp(-eta r_k), r_k the component's
// relative excess error (L_k - L_best) / L_best over a step group. A young
// series judges by few errors, so an Engine also keeps, per resource, P_k: the
// mean over the fleet's series of min(r_k, 1), and a series weighs by
// exp(-eta (a r_k + (1-a) P_k)) with a = n / (n + n0), n its samples. The
// prior fades as a series' own errors accumulate (Bitbrains VMs are unlike
// one another: a prior that keeps a fixed share made CPU and memory worse).
//
// P is accumulated in ObserveBatch, from each series' losses right after its
// sample (while its slab is in cache: the blend computes r_k for its weights
// anyway), and published once per batch. A forecast made at a sample
// therefore uses a P of the fleet's samples before that batch (and, when
// batches run concurrently, those of the batches that finished first): never
// a later one. Observe and ObserveAll use P but do not add to it.

// maxGroups is groups(1024), the largest horizon's step groups.
const maxGroups = 11

// priorTab is a published prior: immutable once stored.
type priorTab struct {
	n0 float32 // samples of a series' own errors the prior is worth
	p  [maxGroups][nComp]float32
}

// poolAcc sums one batch's relative excess losses, per group and component.
type poolAcc struct {
	sum, cnt [maxGroups][nComp]float64
}

func (a *poolAcc) add(g int, L []float32, best float32) {
	inv := 1 / best
	s, c := &a.sum[g], &a.cnt[g]
	for k, l := range L[:nComp] {
		if l < offLoss/2 { // a component not in the blend has no error to pool
			s[k] += float64(min((l-best)*inv, 1))
			c[k]++
		}
	}
}

// pool is an Engine's prior, per resource.
type pool struct {
	n0 float32
	mu sync.Mutex
	// The fleet's sums, each batch's weighted by its share of the fleet
	// (see merge).
	sum, cnt [4][maxGroups][nComp]float64
	tab      [4]atomic.Pointer[priorTab]
}

// poolN0 is the number of its own samples after which a series' errors count
// as much as the fleet's: the blend's own loss memory, one daily cycle (at
// least minLossMemory). The prior stands in for the errors a series has not
// yet seen over a whole cycle, and yields once it has; it is a property of the
// data's period like the loss memory, not a fitted constant.
func poolN0(p Params) float32 { return float32(max(p.day(), minLossMemory)) }

func newPool(p Params) *pool { return &pool{n0: poolN0(p)} }

// merge adds a batch of m series' sums for resource r to the fleet's, out of
// a fleet of n VMs, and publishes the new prior. Old sums decay by the share
// of the fleet the batch covers, so that a whole-fleet batch replaces them and
// concurrent chunks of one interval make a mean over about one interval.
func (pl *pool) merge(r int, a *poolAcc, m, n int) {
	if m == 0 {
		return
	}
	f := 1 - float64(m)/float64(max(n, m))
	pl.mu.Lock()
	defer pl.mu.Unlock()
	S, C := &pl.sum[r], &pl.cnt[r]
	for g := range S {
		for k := range S[g] {
			S[g][k] = f*S[g][k] + a.sum[g][k]
			C[g][k] = f*C[g][k] + a.cnt[g][k]
		}
	}
	pl.publish(r)
}

// publish stores resource r's prior from the sums; pl.mu held.
func (pl *pool) publish(r int) {
	t := &priorTab{n0: pl.n0}
	S, C := &pl.sum[r], &pl.cnt[r]
	any := false
	for g := range S {
		for k := range S[g] {
			if C[g][k] > 0 {
				t.p[g][k] = float32(S[g][k] / C[g][k])
				any = true
			}
		}
	}
	if !any {
		pl.tab[r].Store(nil)
		return
	}
	pl.tab[r].Store(t)
}

// prior is the published prior of the series' resource, or nil.
func (s *Series) prior() *priorTab {
	if s.sh.pool == nil {
		return nil
	}
	return s.sh.pool.tab[s.res].Load()
}

// validPool reports whether sums could have come from merge: finite, counts
// non-negative, and each sum within [0, its count] (every term is in [0, 1]).
func validPool(S, C *[4][maxGroups][nComp]float64) bool {
	for r := range S {
		for g := range S[r] {
			for k, s := range S[r][g] {
				c := C[r][g][k]
				if math.IsNaN(s) || math.IsNaN(c) || math.IsInf(c, 0) || c < 0 || s < 0 || s > c*(1+1e-6) {
					return false
				}
			}
		}
	}
	return true
}
