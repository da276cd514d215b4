package forecast

// History is a ring buffer of a series' newest samples. On its own it starts
// small and doubles up to its capacity; an Engine instead hands out full rings
// from an arena (see ringArena), trading memory of young VMs for locality.
type History struct {
	buf   []float32
	head  int   // next write position
	n     int   // samples held
	total int64 // samples ever pushed
	max   int
}

const minHistory = 128 // the longest window a model reads plus slack

// NewHistory returns a ring that holds at most capacity samples.
func NewHistory(capacity int) *History {
	h := &History{}
	h.init(capacity)
	return h
}

func (h *History) init(capacity int) {
	if capacity < minHistory {
		capacity = minHistory
	}
	h.max = capacity
	h.buf = make([]float32, minHistory)
}

// Push appends x, dropping the oldest sample when full.
func (h *History) Push(x float32) {
	if h.n == len(h.buf) && len(h.buf) < h.max {
		h.grow()
	}
	h.buf[h.head] = x
	h.head++
	if h.head == len(h.buf) {
		h.head = 0
	}
	if h.n < len(h.buf) {
		h.n++
	}
	h.total++
}

func (h *History) grow() {
	c := min(2*len(h.buf), h.max)
	nb := make([]float32, c)
	// Unroll oldest..newest so that head becomes n.
	k := copy(nb, h.buf[h.head:])
	copy(nb[k:], h.buf[:h.head])
	h.buf = nb
	h.head = h.n
}

// Len is the number of samples held.
func (h *History) Len() int { return h.n }

// Total is the number of samples ever pushed.
func (h *History) Total() int64 { return h.total }

// Cap is the most samples the ring will hold.
func (h *History) Cap() int { return h.max }

// Bytes is the memory held by the samples.
func (h *History) Bytes() int { return 4 * cap(h.buf) }

// At returns the i-th newest sample: At(0) is the last pushed. i must be < Len.
func (h *History) At(i int) float32 {
	j := h.head - 1 - i
	if j < 0 {
		j += len(h.buf)
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
