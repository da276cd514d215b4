package trace

import (
	"slices"
	"strings"
	"testing"
)

// TestScale: the originals come first and unchanged, the fleet is factor
// times larger, copies stay within bounds and near their source's mean, and
// a seed gives one fleet.
func TestScale(t *testing.T) {
	w, err := Sample()
	if err != nil {
		t.Fatal(err)
	}
	w.VMs = w.VMs[:50]
	s, err := Scale(w, 10, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VMs) != 500 || s.Len() != w.Len() || s.Step != w.Step {
		t.Fatalf("%d VMs of %d samples", len(s.VMs), s.Len())
	}
	for i := range w.VMs {
		if s.VMs[i].ID != w.VMs[i].ID || !slices.Equal(s.VMs[i].CPU, w.VMs[i].CPU) {
			t.Fatalf("original %d changed", i)
		}
	}
	src := map[string]*Series{}
	for i := range w.VMs {
		src[w.VMs[i].ID] = &w.VMs[i]
	}
	ids := map[string]bool{}
	for _, v := range s.VMs[50:] {
		if ids[v.ID] {
			t.Fatalf("ID %s twice", v.ID)
		}
		ids[v.ID] = true
		o := src[v.ID[:strings.LastIndex(v.ID, "~")]]
		if o == nil {
			t.Fatalf("copy %s names no source", v.ID)
		}
		var m, mo float64
		for j, x := range v.CPU {
			if x < 0 || x > 1 {
				t.Fatalf("%s CPU %v out of 0..1", v.ID, x)
			}
			m += float64(x)
			mo += float64(o.CPU[j])
		}
		// The level is log-normal with sigma 0.1: beyond 0.6x..1.6x is 5 sigma.
		if mo > 1 && (m < 0.6*mo || m > 1.6*mo) && m < float64(len(v.CPU))*0.99 {
			t.Errorf("%s mean %.2f vs its source's %.2f", v.ID, m, mo)
		}
	}
	again, _ := Scale(w, 10, 7)
	other, _ := Scale(w, 10, 8)
	if !slices.Equal(again.VMs[321].CPU, s.VMs[321].CPU) || again.VMs[321].ID != s.VMs[321].ID {
		t.Error("the same seed gave another fleet")
	}
	same := 0
	for i := 50; i < 500; i++ {
		if other.VMs[i].ID == s.VMs[i].ID {
			same++
		}
	}
	if same > 100 {
		t.Errorf("seeds 7 and 8 drew the same source for %d of 450 copies", same)
	}
	if one, _ := Scale(w, 1, 7); one != w {
		t.Error("factor 1 should be the workload itself")
	}
	if _, err := Scale(w, 0, 7); err == nil || !strings.Contains(err.Error(), "scale") {
		t.Errorf("factor 0: %v", err)
	}
}
