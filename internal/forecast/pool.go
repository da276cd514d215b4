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
// exp(-eta (c_k - min c)), c_k = a_k r_k + (1-a_k) P_k, a_k = n / (n + n0_k),
// n its samples and n0_k read from the fleet's spread (see poolN0max). The
// prior fades as a series' own errors accumulate (Bitbrains VMs are unlike
// one another: a prior that keeps a fixed share made CPU and memory worse).
//
// P is accumulated in ObserveBatch (or ObserveInto), from each series' losses
// right after its sample (while its slab is in cache: the blend computes r_k
// for its weights anyway), and published once per batch (Learn). A forecast
// made at a sample therefore uses a P of the fleet's samples before that
// batch: never a later one. Observe and ObserveAll use P but do not add to it.

// maxGroups is groups(1024), the largest horizon's step groups.
const maxGroups = 11

// priorTab is a published prior: immutable once stored.
type priorTab struct {
	p  [maxGroups][nComp]float32
	n0 [maxGroups][nComp]float32 // samples of a series' own errors P_k is worth
}

// poolAcc sums one batch's relative excess losses, per group and component,
// in fixed point (units of 2^-poolBits): integer sums do not depend on the
// order of their terms, so parts of one interval observed concurrently and
// summed (Learn) give the prior one sequential batch gives, bit for bit.
type poolAcc struct {
	sum, sq, cnt [maxGroups][nComp]int64
}

// poolBits: r_k is in [0, 1], so 2^-30 is far finer than a float32 weight
// resolves, and 2^33 terms fit in an int64 sum.
const poolBits = 30

func (a *poolAcc) add(g int, L []float32, best float32) {
	inv := 1 / best
	s, q, c := &a.sum[g], &a.sq[g], &a.cnt[g]
	for k, l := range L[:nComp] {
		if l < offLoss/2 { // a component not in the blend has no error to pool
			r := float64(min((l-best)*inv, 1))
			if !(r >= 0) {
				continue
			}
			s[k] += int64(math.Ldexp(r, poolBits) + 0.5)
			q[k] += int64(math.Ldexp(r*r, poolBits) + 0.5)
			c[k]++
		}
	}
}

// plus adds b's sums to a's.
func (a *poolAcc) plus(b *poolAcc) {
	for g := range a.sum {
		for k := range a.sum[g] {
			a.sum[g][k] += b.sum[g][k]
			a.sq[g][k] += b.sq[g][k]
			a.cnt[g][k] += b.cnt[g][k]
		}
	}
}

// pool is an Engine's prior, per resource.
type pool struct {
	n0max float32
	mu    sync.Mutex
	// The fleet's sums of r_k, r_k^2 and counts, each batch's weighted by
	// its share of the fleet (see merge).
	sum, sq, cnt [4][maxGroups][nComp]float64
	tab          [4]atomic.Pointer[priorTab]
}

// How much the prior is worth (n0, in samples of a series' own errors) is
// read from the fleet, as in empirical Bayes: with the fleet's r_k spread
// around P_k with variance tau^2, and a series' own r_k the mean of n noisy
// per-sample terms of variance sigma^2, the posterior mean weighs its own by
// a = n / (n + sigma^2/tau^2). sigma^2 is taken as 1: an absolute error
// spreads about as much as its mean (exponential, as of a Laplace error), so
// a relative excess error per sample has unit variance. tau^2 is estimated by
// the fleet's variance of r_k, which also holds the young series' noise, so
// the prior is if anything too weak. Where VMs agree (a PlanetLab day) the
// prior counts for long; where they differ (Bitbrains) it fades within a few
// samples. n0 is capped at the blend's own loss memory, one daily cycle: own
// errors older than that are forgotten anyway.
func poolN0max(p Params) float32 { return float32(max(p.day(), minLossMemory)) }

func newPool(p Params) *pool { return &pool{n0max: poolN0max(p)} }

// merge adds a batch of m series' sums for resource r to the fleet's, out of
// a fleet of n VMs, and publishes the new prior. Old sums decay by the share
// of the fleet the batch covers, so that a whole-fleet batch replaces them.
func (pl *pool) merge(r int, a *poolAcc, m, n int) {
	if m == 0 {
		return
	}
	f := 1 - float64(m)/float64(max(n, m))
	pl.mu.Lock()
	defer pl.mu.Unlock()
	S, Q, C := &pl.sum[r], &pl.sq[r], &pl.cnt[r]
	for g := range S {
		for k := range S[g] {
			S[g][k] = f*S[g][k] + math.Ldexp(float64(a.sum[g][k]), -poolBits)
			Q[g][k] = f*Q[g][k] + math.Ldexp(float64(a.sq[g][k]), -poolBits)
			C[g][k] = f*C[g][k] + float64(a.cnt[g][k])
		}
	}
	pl.publish(r)
}

// publish stores resource r's prior from the sums; pl.mu held.
func (pl *pool) publish(r int) {
	t := &priorTab{}
	S, Q, C := &pl.sum[r], &pl.sq[r], &pl.cnt[r]
	any := false
	for g := range S {
		for k := range S[g] {
			t.n0[g][k] = 0 // no prior: own errors only
			if C[g][k] > 0 {
				m := S[g][k] / C[g][k]
				v := Q[g][k]/C[g][k] - m*m
				t.p[g][k] = float32(m)
				t.n0[g][k] = pl.n0max
				if v*float64(pl.n0max) > 1 {
					t.n0[g][k] = float32(1 / v)
				}
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
func validPool(S, Q, C *[4][maxGroups][nComp]float64) bool {
	for r := range S {
		for g := range S[r] {
			for k, s := range S[r][g] {
				c, q := C[r][g][k], Q[r][g][k]
				if math.IsNaN(s) || math.IsNaN(c) || math.IsInf(c, 0) || c < 0 || s < 0 || s > c*(1+1e-6) ||
					math.IsNaN(q) || q < 0 || q > c*(1+1e-6) {
					return false
				}
			}
		}
	}
	return true
}
