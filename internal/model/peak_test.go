package model

import "testing"

// Clamp bounds the peak like the forecast: no more CPU or memory than the VM's
// size, never below zero.
func TestClampBoundsThePeak(t *testing.T) {
	f := ResourceForecast{Peak: Resources{CPU: 9000, Mem: 5000, Net: -1, Disk: 70}}
	f.Clamp(Resources{CPU: 4000, Mem: 2048})
	if want := (Resources{CPU: 4000, Mem: 2048, Net: 0, Disk: 70}); f.Peak != want {
		t.Errorf("peak %+v, want %+v", f.Peak, want)
	}
}
