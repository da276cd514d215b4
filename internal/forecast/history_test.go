package forecast

import "testing"

func TestHistoryRingGrowsAndWraps(t *testing.T) {
	h := NewHistory(300)
	for i := range 1000 {
		h.Push(float32(i))
		if got := h.At(0); got != float32(i) {
			t.Fatalf("after %d pushes At(0) = %v", i+1, got)
		}
		if n := h.Len(); n != min(i+1, 300) {
			t.Fatalf("after %d pushes Len = %d", i+1, n)
		}
	}
	for i := range 300 {
		if got := h.At(i); got != float32(999-i) {
			t.Fatalf("At(%d) = %v, want %d", i, got, 999-i)
		}
	}
	if h.Total() != 1000 {
		t.Fatalf("Total = %d", h.Total())
	}
	// Capacity is a bound: 4 bytes a sample once full.
	if h.Bytes() != 4*300 {
		t.Fatalf("Bytes = %d, want %d", h.Bytes(), 4*300)
	}
}

func TestHistoryStartsSmall(t *testing.T) {
	h := NewHistory(100_000)
	h.Push(1)
	if h.Bytes() > 4*minHistory {
		t.Fatalf("a new series holds %d bytes", h.Bytes())
	}
}
