package forecast

import (
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// Forecast carries each resource's largest sample of the last day: a burst a day
// and a half ago has aged out, one six hours ago has not.
func TestForecastPeakIsTheLastDaysLargestSample(t *testing.T) {
	e, err := NewEngine(Config{Step: 300, Horizon: 6})
	if err != nil {
		t.Fatal(err)
	}
	v := e.VM("a")
	for k := range 440 {
		d := model.Resources{CPU: 100, Mem: 50}
		switch k {
		case 440 - 432: // 36 h ago
			d.CPU = 5000
		case 440 - 72: // 6 h ago
			d.CPU, d.Mem = 3000, 700
		}
		v.ObserveAll(d)
	}
	f := v.Forecast(6, 0.9)
	if f.Peak.CPU != 3000 || f.Peak.Mem != 700 || f.Peak.Net != 0 {
		t.Errorf("peak %+v: want CPU 3000, memory 700, network 0", f.Peak)
	}
}
