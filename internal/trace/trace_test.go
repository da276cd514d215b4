package trace

import (
	"math"
	"strings"
	"testing"
	"testing/fstest"
)

// files builds an in-memory folder "d" from name/content pairs.
func files(kv ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for i := 0; i < len(kv); i += 2 {
		m["d/"+kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
	}
	return m
}

// wantErr checks that err is non-nil and mentions every part (file, line, field).
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

// checkWorkload asserts the invariants every reader promises.
func checkWorkload(t *testing.T, w *Workload) {
	t.Helper()
	if w.Step <= 0 || w.Repaired < 0 || len(w.VMs) == 0 || w.Len() == 0 {
		t.Fatalf("bad workload header: step %v repaired %d VMs %d len %d", w.Step, w.Repaired, len(w.VMs), w.Len())
	}
	n := w.Len()
	for _, s := range w.VMs {
		for name, xs := range map[string][]float32{"CPU": s.CPU, "Mem": s.Mem, "Net": s.Net, "Disk": s.Disk} {
			if xs == nil && name != "CPU" {
				continue
			}
			if len(xs) != n {
				t.Fatalf("VM %q %s has %d samples, want %d", s.ID, name, len(xs), n)
			}
			for i, x := range xs {
				v := float64(x)
				bad := math.IsNaN(v) || math.IsInf(v, 0) || v < 0
				if name == "CPU" || name == "Mem" {
					bad = bad || v > 1
				}
				if bad {
					t.Fatalf("VM %q %s[%d] = %v out of range", s.ID, name, i, x)
				}
			}
		}
		for _, c := range []float64{s.CPUCapacity, s.MemCapacity} {
			if math.IsNaN(c) || math.IsInf(c, 0) || c < 0 {
				t.Fatalf("VM %q capacity %v", s.ID, c)
			}
		}
	}
}

func near(a float32, b float64) bool { return math.Abs(float64(a)-b) <= 1e-6*math.Max(1, math.Abs(b)) }

func wantSeries(t *testing.T, what string, got []float32, want ...float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
	for i := range want {
		if !near(got[i], want[i]) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
}
