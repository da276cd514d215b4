package model

import (
	"slices"
	"testing"
)

func TestClamp(t *testing.T) {
	f := ResourceForecast{
		PredictedCPU:       []float64{-5, 500, 1500},
		PredictedMemory:    []float64{300, -1},
		PredictedNetworkIO: []float64{-2, 7},
		PredictedDiskIO:    []float64{9},
		Upper:              []Resources{{CPU: 1200, Mem: 512, Net: -1, Disk: 4}, {CPU: -3, Mem: 100}},
	}
	f.Clamp(Resources{CPU: 1000, Mem: 256})
	want := ResourceForecast{
		PredictedCPU:       []float64{0, 500, 1000},
		PredictedMemory:    []float64{256, 0},
		PredictedNetworkIO: []float64{0, 7},
		PredictedDiskIO:    []float64{9},
		Upper:              []Resources{{CPU: 1000, Mem: 256, Net: 0, Disk: 4}, {CPU: 0, Mem: 100}},
	}
	if !slices.Equal(f.PredictedCPU, want.PredictedCPU) || !slices.Equal(f.PredictedMemory, want.PredictedMemory) ||
		!slices.Equal(f.PredictedNetworkIO, want.PredictedNetworkIO) || !slices.Equal(f.PredictedDiskIO, want.PredictedDiskIO) ||
		!slices.Equal(f.Upper, want.Upper) {
		t.Errorf("clamped %+v\nwant    %+v", f, want)
	}
	// No size: only the floor at zero.
	g := ResourceForecast{PredictedCPU: []float64{-1, 5000}, Upper: []Resources{{CPU: 9000}}}
	g.Clamp(Resources{})
	if !slices.Equal(g.PredictedCPU, []float64{0, 5000}) || g.Upper[0].CPU != 9000 {
		t.Errorf("no size: %+v", g)
	}
}
