package forecast

import (
	"math"
	"unsafe"
)

// History is a ring buffer of a series' newest samples. On its own it starts
// small and doubles up to its capacity; an Engine instead hands out full rings
// from an arena (see ringArena), trading memory of young VMs for locality.
//
// Samples are float32, or bfloat16 (float32's upper 16 bits, rounded to
// nearest even) when the series is configured with 16-bit history: at fleet
// scale the rings are most of the memory. bfloat16 keeps float32's range and
// sign, so memory in KB and byte rates fit, with 8 significant bits (at most
// 2^-8 = 0.4 % relative error, half that on average). Each sample is rounded once, when pushed, and the
// newest exactN samples are also kept as float32 and At returns those: the
// short windows, medians and means the models keep see exact values, and only
// the seasonal lags (a day and a week back) read rounded ones. Without that, a
// VM that repeats one value forecasts it rounded, and when rounded down its
// tight upper bound misses every sample (Bitbrains CPU coverage at 0.9 fell
// from 0.899 to 0.887). Derived state stays consistent with At: a sorted
// window longer than exactN holds rounded values (see winObserve).
//
// After the ring, in the same buffer, sit the exact samples (16-bit mode) and the maxima of the last nb blocks of
// bsz samples (by sample number), which make Peak over a day O(sqrt(day)).
type History struct {
	buf   []float32 // the ring's memory; the samples themselves when b16 is nil
	b16   []uint16  // bfloat16 view of buf in 16-bit mode, else nil
	size  int       // ring length in samples: grows to max
	head  int       // next write position
	n     int       // samples held
	total int64     // samples ever pushed
	max   int
	half  bool  // 16-bit samples
	bsz   int32 // samples per peak block; 0: no block maxima
	nb    int32 // peak blocks kept
	// Counters instead of divisions on every push: the next sample's offset
	// in its block and that block's slot, and where the exact copy starts.
	bpos, bslot, xoff int32
}

const minHistory = 128 // the longest window a model reads plus slack

// exactN is how many newest samples a 16-bit history also keeps as float32:
// the blend's longest window is 24. A power of two, indexed by sample number.
const exactN = 32

// NewHistory returns a ring of float32 samples that holds at most capacity
// samples.
func NewHistory(capacity int) *History {
	h := &History{}
	h.init(capacity, false, 0, 0)
	return h
}

func (h *History) init(capacity int, half bool, bsz, nb int) {
	if capacity < minHistory {
		capacity = minHistory
	}
	h.max, h.half, h.bsz, h.nb = capacity, half, int32(bsz), int32(nb)
	h.setBuf(make([]float32, ringWords(min(minHistory, capacity), half, nb)), min(minHistory, capacity))
}

// ringWords is how many float32 words hold a ring of size samples and nb
// block maxima.
func ringWords(size int, half bool, nb int) int {
	if half {
		return (size+nb+1)/2 + exactN
	}
	return size + nb
}

// setBuf makes raw (ringWords long) the ring, of size samples.
func (h *History) setBuf(raw []float32, size int) {
	h.buf, h.size, h.b16 = raw, size, nil
	h.xoff = int32((size + int(h.nb) + 1) / 2)
	if h.half {
		h.b16 = unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(raw))), 2*len(raw))
	}
}

// exact is the float32 copy of the newest samples (16-bit mode).
func (h *History) exact() []float32 {
	return h.buf[h.xoff : h.xoff+exactN]
}

// toBF16 rounds x to the nearest bfloat16, ties to even. NaN stays NaN, and a
// finite x never rounds to infinity (it saturates at the largest finite).
func toBF16(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	r := b + 0x7fff + (b>>16)&1
	if r&0x7f800000 == 0x7f800000 && b&0x7f800000 != 0x7f800000 {
		return uint16(b >> 16)
	}
	return uint16(r >> 16)
}

func fromBF16(u uint16) float32 { return math.Float32frombits(uint32(u) << 16) }

// Quantize is x as this history stores it once older than its exact samples.
func (h *History) Quantize(x float32) float32 {
	if h.half {
		return fromBF16(toBF16(x))
	}
	return x
}

// Push appends x, dropping the oldest sample when full.
func (h *History) Push(x float32) { h.push(x) }

// push appends x.
func (h *History) push(x float32) {
	if h.n == h.size && h.size < h.max {
		h.grow()
	}
	q := x
	if h.half {
		u := toBF16(x)
		q = fromBF16(u)
		h.b16[h.head] = u
		h.exact()[h.total&(exactN-1)] = x
	} else {
		h.buf[h.head] = x
	}
	if h.bsz > 0 {
		// Blocks hold the max of the stored (rounded) values: rounding is
		// monotone, so that is the max of what At returns once the block is
		// older than the exact samples, and Peak reads no block before then.
		k := h.size + int(h.bslot)
		m := q
		if h.bpos != 0 {
			m = max(h.block(k), q)
		}
		h.setBlock(k, m)
		if h.bpos++; h.bpos == h.bsz {
			h.bpos = 0
			if h.bslot++; h.bslot == h.nb {
				h.bslot = 0
			}
		}
	}
	h.head++
	if h.head == h.size {
		h.head = 0
	}
	if h.n < h.size {
		h.n++
	}
	h.total++
}

// block and setBlock read and write the slot at index k of the buffer; m is
// always a value the ring could hold, so storing it is exact.
func (h *History) block(k int) float32 {
	if h.half {
		return fromBF16(h.b16[k])
	}
	return h.buf[k]
}

func (h *History) setBlock(k int, m float32) {
	if h.half {
		h.b16[k] = toBF16(m)
	} else {
		h.buf[k] = m
	}
}

func (h *History) grow() {
	c := min(2*h.size, h.max)
	old := *h
	h.setBuf(make([]float32, ringWords(c, h.half, int(h.nb))), c)
	// Unroll oldest..newest so that head becomes n.
	for i := range old.n {
		h.put(i, old.At(old.n-1-i))
	}
	for k := range int(h.nb) {
		h.setBlock(h.size+k, old.block(old.size+k))
	}
	if h.half {
		copy(h.exact(), old.exact())
	}
	h.head = h.n % h.size
}

// put writes the sample at ring position j.
func (h *History) put(j int, x float32) {
	if h.half {
		h.b16[j] = toBF16(x)
	} else {
		h.buf[j] = x
	}
}

// fill replaces the samples (oldest first, at most the ring's size) as if
// they were the last of total pushes, quantising them, and rebuilds the block
// maxima from them: Peak never reads a block that starts before them.
func (h *History) fill(xs []float32, total int64) {
	h.n, h.head, h.total = len(xs), len(xs)%h.size, total
	for i, x := range xs {
		h.put(i, x)
		if h.half && i >= len(xs)-exactN {
			h.exact()[(total-int64(len(xs))+int64(i))&(exactN-1)] = x
		}
	}
	if h.bsz == 0 {
		return
	}
	bs := int64(h.bsz)
	for i, x := range xs {
		t := total - int64(len(xs)) + int64(i)
		k := h.size + int(t/bs%int64(h.nb))
		m := h.Quantize(x)
		if t%bs != 0 && i > 0 {
			m = max(h.block(k), m)
		}
		h.setBlock(k, m)
	}
	h.setBlockCounters()
}

func (h *History) setBlockCounters() {
	if h.bsz > 0 {
		bs := int64(h.bsz)
		h.bpos, h.bslot = int32(h.total%bs), int32(h.total/bs%int64(h.nb))
	}
}

// Len is the number of samples held.
func (h *History) Len() int { return h.n }

// Total is the number of samples ever pushed.
func (h *History) Total() int64 { return h.total }

// Cap is the most samples the ring will hold.
func (h *History) Cap() int { return h.max }

// Bytes is the memory held by the samples (and the peak blocks).
func (h *History) Bytes() int { return 4 * cap(h.buf) }

// At returns the i-th newest sample: At(0) is the last pushed. i must be < Len.
func (h *History) At(i int) float32 {
	j := h.head - 1 - i
	if j < 0 {
		j += h.size
	}
	if h.b16 != nil {
		if i < exactN {
			return h.buf[int(h.xoff)+int((h.total-1-int64(i))&(exactN-1))]
		}
		return fromBF16(h.b16[j])
	}
	return h.buf[j]
}

// Last returns the newest sample, or 0 when empty.
func (h *History) Last() float32 {
	if h.n == 0 {
		return 0
	}
	return h.At(0)
}

// Peak is the largest of the newest n samples held (all of them when n <= 0
// or n > Len), or 0 without history. With block maxima it scans only the
// part of the oldest block in range and takes the blocks' maxima for the
// rest; max is associative and commutative (NaN wins, +0 beats -0), so the
// result is the scan's exactly.
func (h *History) Peak(n int) float32 {
	if n <= 0 || n > h.n {
		n = h.n
	}
	var m float32
	// The exact samples are read as they are; blocks cover the older rest.
	a := 0
	if h.half {
		a = min(n, exactN)
		for i := range a {
			m = max(m, h.At(i))
		}
	}
	bs := int64(h.bsz)
	if bs > 0 && a < n {
		T := h.total - 1                  // newest sample number; At(i) is sample T-i
		t, lo := T-int64(a), T-int64(n)+1 // the older part: samples lo..t
		kf, kl := (lo+bs-1)/bs, t/bs      // the whole blocks in it
		if t < T && (t+1)%bs != 0 {
			kl-- // block t/bs has exact samples too, which its max covers
		}
		if kl >= kf && T/bs-kf < int64(h.nb) {
			for i := T - (kf*bs - 1); i < int64(n); i++ {
				m = max(m, h.At(int(i)))
			}
			for i := int64(a); i <= T-(kl+1)*bs; i++ {
				m = max(m, h.At(int(i)))
			}
			for k := kf; k <= kl; k++ {
				m = max(m, h.block(h.size+int(k%int64(h.nb))))
			}
			return m
		}
	}
	for i := a; i < n; i++ {
		m = max(m, h.At(i))
	}
	return m
}

// scanPeak is Peak without the blocks, for tests.
func (h *History) scanPeak(n int) float32 {
	if n <= 0 || n > h.n {
		n = h.n
	}
	var m float32
	for i := range n {
		m = max(m, h.At(i))
	}
	return m
}
