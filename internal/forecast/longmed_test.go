package forecast

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestLongMedianMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	b := newBlend(Params{Step: 300, Horizon: 6})
	h := NewHistory(1000)
	for i := range 1000 {
		h.Push(float32(rng.IntN(5)))
		m24 := float32(rng.IntN(5))
		got96, got192 := b.longMedian(m24, h)
		n := int(b.nblk)
		v := append([]float32{m24}, b.blk[:n]...)
		w := slices.Clone(v[:min(len(v), 4)])
		slices.Sort(w)
		slices.Sort(v)
		if want96, want192 := medianOf(w), medianOf(v); got96 != want96 || got192 != want192 {
			t.Fatalf("sample %d: got %v %v, want %v %v (blocks %v, m24 %v)", i, got96, got192, want96, want192, b.blk[:n], m24)
		}
	}
}
