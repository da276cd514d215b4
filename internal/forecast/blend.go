package forecast

import (
	"math"
	"math/bits"
	"slices"
)

// blend is the engine's default model: per VM, resource and horizon step, a
// weighted mean of cheap models, each weighted by exp(-eta * its excess recent
// absolute error over the best one's, relative). Weighting rather than picking
// the best keeps the forecast stable when two models are close, and the relative
// form makes eta unit-free, so CPU fractions and KB/s rates share one setting.
//
// The components are the ones that pay their way at O(1) or O(window) cost:
// AR and Holt-Winters stay out (they lose on both data sets and their state is
// large), and so does EWMA (the blend did better without it on both). Everything lives in one float32 slab, so that an update walks a few
// contiguous cache lines: at 400,000 series, memory traffic is the cost.
const (
	blendEta = 20
	// The losses' memory is a daily cycle (288 samples at 5 minutes), at least
	// 100 samples: a component is judged over every time of day rather than
	// over the last few hours' regime, which on long traces picks better (on
	// Bitbrains it cut the MAE of CPU, network and disk by 1-1.5 % and raised
	// memory's 0.2 %; PlanetLab's days moved by at most 0.2 %).
	minLossMemory = 100
)

const (
	cLast = iota
	cMed6
	cMed24
	cMed96
	cMean12
	cMed192
	nFlat // models above forecast one value for every step
)

const (
	cHolt = nFlat + iota
	cDay
	cWeek
	nComp
)

type blend struct {
	h, day, week int32
	row          int32      // newest origin mod h: where its forecasts are kept
	nw           int32      // samples held in the sorted window
	blk          [7]float32 // medians of the last seven 24-sample blocks, newest first
	s3           [3]float32 // the newest three of them, sorted
	s7           [7]float32 // all seven, sorted
	nblk         int32
	live         uint16 // bit k: model k is in the blend
	neg          bool   // a negative value was seen, so forecasts are not clamped at 0
	meanAge      int32
	meanSum      float64
	holt         holt
	decay        float32 // of the losses, per sample
	// slab holds, in order: the sorted 24-sample window; flat[row*nFlat+k],
	// model k's forecast at origin row (mod h); Holt's level and trend per
	// origin; loss[g*nComp+k], the decayed sum of |error| of model k over step
	// group g. Offsets, not slice headers: at fleet scale every byte of a
	// Series is memory traffic.
	slab []float32
}

func blendSlabLen(h int) int { return win24 + h*nFlat + 2*h + nComp*groups(h) }

const win24 = 24

func (b *blend) parts() (win, flat, hl, loss []float32) {
	h := int(b.h)
	sl := b.slab
	win, sl = sl[:win24:win24], sl[win24:]
	flat, sl = sl[:h*nFlat], sl[h*nFlat:]
	hl, sl = sl[:2*h], sl[2*h:]
	return win, flat, hl, sl[:nComp*groups(h)]
}

// holtDsum[s] is phi+...+phi^(s+1), Holt's damped trend multiplier at step s+1.
var holtDsum = dampedSums(newHolt().phi, 1024)

// Steps are weighted in groups 1, 2-3, 4-7, ...: neighbouring steps favour the
// same models, a group has more errors to judge by than one step, and the
// weights (the costly part of an update) are computed once per group.
func groups(h int) int { return bits.Len(uint(h)) }
func group(si int) int { return bits.Len(uint(si+1)) - 1 }

// newBlend makes a stand-alone blend with its own slab (the Model interface);
// Series embed one over their own slab instead.
func newBlend(p Params) *blend {
	b := &blend{}
	h := max(p.Horizon, 1)
	b.init(p, make([]float32, blendSlabLen(h)))
	return b
}

func dampedSums(phi float32, h int) []float32 {
	d := make([]float32, h)
	var s, p float32 = 0, 1
	for i := range d {
		p *= phi
		s += p
		d[i] = s
	}
	return d
}

func (b *blend) init(p Params, slab []float32) {
	h := max(p.Horizon, 1)
	b.h, b.day, b.week = int32(h), int32(p.day()), int32(p.week())
	b.decay = 1 - 1/float32(max(int(b.day), minLossMemory))
	b.holt = *newHolt()
	b.live = 1<<cHolt | (1<<nFlat - 1)
	b.row = -1
	b.slab = slab
	_, _, _, loss := b.parts()
	// Models not yet in the blend carry a loss that weighs nothing.
	for g := range groups(h) {
		loss[g*nComp+cDay] = offLoss
		loss[g*nComp+cWeek] = offLoss
	}
}

const offLoss = 1e30

func (b *blend) seasonalReady(p int, h *History) bool {
	return p > int(b.h) && h.Len() > p && h.Total() > int64(p)+int64(b.h)
}

func (b *blend) Observe(h *History, x float32) {
	H := int(b.h)
	win, flat, hl, loss := b.parts()
	if x < 0 {
		b.neg = true
	}
	day, week := b.live&(1<<cDay) != 0, b.live&(1<<cWeek) != 0
	var xd, xw float32
	if day {
		xd = h.At(int(b.day))
	}
	if week {
		xw = h.At(int(b.week))
	}
	// Score the forecasts that targeted this sample: origin t-k is row-k+1.
	// Each group's losses decay once a sample, then gain its steps' errors.
	n := int(min(int64(H), h.Total()-1))
	if n > 0 {
		for g := range group(n-1) + 1 {
			L := loss[g*nComp : g*nComp+nComp]
			for k := range L {
				L[k] *= b.decay
			}
			// The seasonal forecast of this sample is the same from every
			// origin; a model not yet in the blend keeps its weightless loss.
			m := float32(min(2<<g, n+1) - 1<<g) // steps of group g scored now
			if day {
				L[cDay] += m * abs32(x-xd)
			} else {
				L[cDay] = offLoss
			}
			if week {
				L[cWeek] += m * abs32(x-xw)
			} else {
				L[cWeek] = offLoss
			}
		}
	}
	r := int(b.row)
	for si := range n {
		L := loss[group(si)*nComp:]
		f := flat[r*nFlat : r*nFlat+nFlat]
		for k, v := range f {
			L[k] += abs32(x - v)
		}
		L[cHolt] += abs32(x - (hl[r*2] + holtDsum[si]*hl[r*2+1]))
		if r--; r < 0 {
			r = H - 1
		}
	}
	// Seasonal models join once they have a full horizon of scorable history,
	// starting from the worst current error so that they must earn weight.
	if !day && b.seasonalReady(int(b.day), h) {
		b.join(cDay)
	}
	if !week && b.seasonalReady(int(b.week), h) {
		b.join(cWeek)
	}

	b.nw = int32(winObserve(win[:b.nw], h, win24, x))
	b.meanSum += float64(x)
	if h.Len() > 12 {
		b.meanSum -= float64(h.At(12))
	}
	if b.meanAge++; b.meanAge >= 4096 { // re-add now and then so rounding cannot drift
		b.meanAge, b.meanSum = 0, 0
		for i := range min(12, h.Len()) {
			b.meanSum += float64(h.At(i))
		}
	}
	b.holt.Observe(h, x)

	if b.row++; int(b.row) >= H {
		b.row = 0
	}
	row := int(b.row)
	f := flat[row*nFlat : (row+1)*nFlat]
	f[cLast] = x
	f[cMed6] = median6(h)
	m24 := medianOf(win[:b.nw])
	f[cMed24] = m24
	f[cMed96], f[cMed192] = b.longMedian(m24, h)
	f[cMean12] = float32(b.meanSum / float64(min(12, h.Len())))
	hl[row*2], hl[row*2+1] = b.holt.l, b.holt.b
}

func (b *blend) join(c int) {
	b.live |= 1 << c
	_, _, _, loss := b.parts()
	for g := range groups(int(b.h)) {
		L := loss[g*nComp : g*nComp+nComp]
		var w float32
		for k, l := range L {
			if k != c && b.live&(1<<k) != 0 {
				w = max(w, l)
			}
		}
		L[c] = w
	}
}

// expNeg approximates exp(-x) for x >= 0 by (1-x/8)^8, zero from x = 8 on:
// three multiplications and no branch instead of math.Exp.
func expNeg(x float32) float32 {
	t := 1 - x*(1.0/8)
	// Clear t when negative with its own sign bit: no branch to mispredict.
	b := math.Float32bits(t)
	t = math.Float32frombits(b &^ uint32(int32(b)>>31))
	t *= t
	t *= t
	return t * t
}

// Predict is the weighted mean: a stand-alone blend has no error scale for
// the step toward the mixture's median (see predictWith).
func (b *blend) Predict(h *History, out []float32) { b.predictWith(h, out, nil, nil, 0) }

// predictWith is Predict with the fleet's prior on the weights, if pr is not
// nil, and adds the series' relative excess losses into acc, if not nil (see
// pool). Both come from the Engine: a stand-alone Series has neither.
//
// With scale > 0 (the series' mean absolute error), the forecast is moved
// from the weighted mean toward the median of the mixture it stands for: the
// forecast is scored by absolute error, whose best point is the median of the
// predictive distribution, not its mean. Each component k is read as a
// Laplace distribution centred on its forecast with mean absolute deviation
// scale (so scale is its b), weighted w_k; one Newton step from the weighted
// mean on the mixture's CDF, F(m) = 1/2, comes within rounding of the
// bisected median on the PlanetLab days. Where the components agree within
// the scale it is the mean; where one strays far it is pulled back, like a
// median, without the weighted median's jumps.
func (b *blend) predictWith(h *History, out []float32, pr *priorTab, acc *poolAcc, scale float32) {
	if h.Len() == 0 {
		fill(out, 0)
		return
	}
	H := int(b.h)
	row := int(b.row)
	_, flat, hl, loss := b.parts()
	f := flat[row*nFlat : row*nFlat+nFlat]
	lv, tr := hl[row*2], hl[row*2+1]
	day, week := b.live&(1<<cDay) != 0, b.live&(1<<cWeek) != 0
	var w [nComp]float32
	var sw, fsum float32
	g := -1
	for s := range out {
		si := min(s, H-1)
		if gs := group(si); gs != g {
			g = gs
			L := loss[g*nComp : g*nComp+nComp]
			best := L[0]
			for _, l := range L[1:] {
				best = min(best, l)
			}
			if best > 1e-30 { // below, the losses are rounding noise of a flat series
				inv := blendEta / best
				if pr == nil {
					for k, l := range L {
						w[k] = expNeg((l - best) * inv)
					}
				} else {
					// Own relative excess errors, shrunk toward the fleet's:
					// c_k = a*r_k + (1-a)*P_k with a = n/(n+n0_k), and the
					// weights exp(-eta (c_k - min c)): the best keeps weight
					// 1, as without the prior, so they cannot all vanish.
					n := float32(h.Total())
					P, n0 := &pr.p[g], &pr.n0[g]
					ib := 1 / best
					cmin := float32(math.MaxFloat32)
					for k, l := range L {
						a := n / (n + n0[k])
						c := blendEta * (a*(l-best)*ib + (1-a)*P[k])
						w[k] = c
						cmin = min(cmin, c)
					}
					for k, c := range w {
						w[k] = expNeg(c - cmin)
					}
				}
				if acc != nil {
					acc.add(g, L, best)
				}
			} else {
				for k, l := range L {
					w[k] = 0
					if l <= 1e-30 {
						w[k] = 1
					}
				}
			}
			sw, fsum = 0, 0
			for k, wk := range w {
				sw += wk
				if k < nFlat {
					fsum += wk * f[k]
				}
			}
		}
		// The components' forecasts of this step; those not in the blend
		// stay 0 and weigh 0.
		var v [nComp]float32
		copy(v[:], f)
		v[cHolt] = lv + holtDsum[si]*tr
		if day {
			v[cDay] = h.At(int(b.day) - 1 - s)
		}
		if week {
			v[cWeek] = h.At(int(b.week) - 1 - s)
		}
		p := (fsum + w[cHolt]*v[cHolt] + w[cDay]*v[cDay] + w[cWeek]*v[cWeek]) / sw
		if scale > 0 {
			p = mixMedianStep(p, &v, &w, sw, scale)
		}
		if p < 0 && !b.neg {
			p = 0
		}
		out[s] = p
	}
}

// mixMedianStep is one Newton step from m toward the median of the mixture of
// Laplace distributions centred on v with weights w (summing to sw) and scale
// b: F(m) = sum w_k L((m - v_k)/b) / sw, F' = sum w_k exp(-|z_k|) / (2 b sw).
// The step is kept within one scale and the components' range.
func mixMedianStep(m float32, v, w *[nComp]float32, sw, b float32) float32 {
	ib := 1 / b
	var F, D float32
	lo, hi := m, m
	for k, wk := range w {
		z := (m - v[k]) * ib
		e := wk * expNeg(abs32(z))
		D += e
		F += e * 0.5
		if z >= 0 {
			F += wk - e
		}
		if wk > 0 {
			lo, hi = min(lo, v[k]), max(hi, v[k])
		}
	}
	if !(D > 1e-6*sw) {
		return m
	}
	// A Laplace CDF is near linear only within about one scale of where it
	// is read, so the step is at most b (a trust region): further, Newton
	// can overshoot the median between two distant clusters.
	d := max(-b, min(b, (F-0.5*sw)*2*b/D))
	return max(lo, min(hi, m-d))
}

// longMedian is the median of the current 24-sample median and those of the
// three (and seven) blocks before it: robust levels over ~96 and ~192 samples
// for the cost of a few stored numbers instead of long sorted windows. The
// block medians are kept sorted, so adding the current one is a min and a max.
func (b *blend) longMedian(m24 float32, h *History) (m96, m192 float32) {
	if h.Total()%24 == 0 {
		copy(b.blk[1:], b.blk[:len(b.blk)-1])
		b.blk[0] = m24
		b.nblk = min(b.nblk+1, int32(len(b.blk)))
		copy(b.s3[:], b.blk[:3])
		slices.Sort(b.s3[:])
		b.s7 = b.blk
		slices.Sort(b.s7[:])
	}
	if b.nblk < int32(len(b.blk)) {
		var v [8]float32
		v[0] = m24
		n := 1 + copy(v[1:], b.blk[:b.nblk])
		a := v[:min(n, 4)]
		slices.Sort(a)
		m96 = medianOf(a)
		v[0] = m24
		copy(v[1:], b.blk[:b.nblk])
		a = v[:n]
		slices.Sort(a)
		return m96, medianOf(a)
	}
	// The middle two of the sorted blocks with m24 merged in.
	m96 = (max(b.s3[0], min(m24, b.s3[1])) + min(b.s3[2], max(m24, b.s3[1]))) / 2
	m192 = (max(b.s7[2], min(m24, b.s7[3])) + min(b.s7[4], max(m24, b.s7[3]))) / 2
	return m96, m192
}

// winObserve updates the sorted window v (len = samples held, cap = k) after x
// was pushed to h, and returns the new length.
func winObserve(v []float32, h *History, k int, x float32) int {
	if k >= exactN {
		// At(k) will return x as stored, so keep that value to find it then.
		x = h.Quantize(x)
	}
	if h.Len() > k {
		i := search(v, h.At(k))
		copy(v[i:], v[i+1:])
		v = v[:len(v)-1]
	}
	i := search(v, x)
	v = v[:len(v)+1]
	copy(v[i+1:], v[i:])
	v[i] = x
	return len(v)
}

func medianOf(v []float32) float32 {
	n := len(v)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// median6 is the median of the last 6 samples (fewer while the history is
// shorter) by a 12-comparator sorting network of min/max: branch-free and
// cheaper than keeping a sorted window.
func median6(h *History) float32 {
	var v [6]float32
	n := min(h.Len(), 6)
	for i := range n {
		v[i] = h.At(i)
	}
	if n < 6 {
		w := v[:n]
		slices.Sort(w)
		return medianOf(w)
	}
	cs := func(i, j int) { v[i], v[j] = min(v[i], v[j]), max(v[i], v[j]) }
	cs(0, 5)
	cs(1, 3)
	cs(2, 4)
	cs(1, 2)
	cs(3, 4)
	cs(0, 3)
	cs(2, 5)
	cs(0, 1)
	cs(2, 3)
	cs(4, 5)
	cs(1, 2)
	cs(3, 4)
	return (v[2] + v[3]) / 2
}

// extraFields and checkExtra visit and check, for snapshots, the state of
// components added after the first snapshot format.
func (b *blend) extraFields(c codec)       {}
func (b *blend) checkExtra(held int) error { return nil }
