package forecast

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestMedian6MatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	h := NewHistory(200)
	for i := range 2000 {
		// Integer-valued with ties, like PlanetLab's percentages.
		h.Push(float32(rng.IntN(8)))
		n := min(h.Len(), 6)
		w := make([]float32, n)
		for j := range n {
			w[j] = h.At(j)
		}
		slices.Sort(w)
		if got, want := median6(h), medianOf(w); got != want {
			t.Fatalf("sample %d: median6 = %v, sorted median = %v (%v)", i, got, want, w)
		}
	}
}
