package forecast

import (
	"sync"
	"unsafe"
)

// ringArena hands an Engine's series their history rings, at full capacity,
// carved from large chunks. At fleet scale the rings are most of the memory
// and every update touches a different one: in 4 KB pages that is a TLB miss
// per series, so chunks are asked to be backed by huge pages where the OS
// allows (see hugepages_linux.go). A chunk is ordinary Go memory, freed when
// none of its rings is referenced.
type ringArena struct {
	mu    sync.Mutex
	size  int
	chunk []float32
	grown int         // floats in the last chunk: chunks double up to arenaChunkBytes
	free  [][]float32 // rings of removed VMs, reused first
}

const arenaChunkBytes = 64 << 20

func (a *ringArena) get() []float32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.free); n > 0 {
		b := a.free[n-1]
		a.free = a.free[:n-1]
		return b
	}
	if len(a.chunk) < a.size {
		// Start small so that a small engine (a test, a lab) does not hold
		// 64 MB; a fleet reaches full-size chunks after a few doublings.
		n := max(min(max(2*a.grown, 16*a.size), arenaChunkBytes/4), a.size)
		a.grown = n
		a.chunk = make([]float32, n)
		adviseHuge(unsafe.Slice((*byte)(unsafe.Pointer(&a.chunk[0])), 4*n))
	}
	b := a.chunk[:a.size:a.size]
	a.chunk = a.chunk[a.size:]
	return b
}

// put returns a ring for reuse; rings of another size are left to the GC.
func (a *ringArena) put(b []float32) {
	if len(b) != a.size {
		return
	}
	a.mu.Lock()
	a.free = append(a.free, b)
	a.mu.Unlock()
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
