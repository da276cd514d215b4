package sim

import (
	"reflect"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/trace"
)

// Policies run side by side give what each gives alone, in the order asked.
// Under -race this also checks that the runs share nothing they write.
func TestRunAllGivesWhatEachRunGivesAlone(t *testing.T) {
	day, err := trace.Load("")
	if err != nil {
		t.Fatal(err)
	}
	w := *day
	w.VMs = w.VMs[:60]
	cfg := ConfigFor(&w)
	cfg.Hosts = 40
	var pols []core.Policy
	for _, n := range []string{"headroom", "lr-mmt-1.2", "thr-mmt-0.8"} {
		p, err := core.ParsePolicy(n)
		if err != nil {
			t.Fatal(err)
		}
		pols = append(pols, p)
	}
	opt := func(core.Policy) Options { return Options{Config: &cfg} }
	got, err := RunAll(&w, pols, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pols {
		want, err := Run(&w, p, opt(p))
		if err != nil {
			t.Fatal(err)
		}
		want.WallSeconds, got[i].WallSeconds = 0, 0
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("%s side by side: %+v\nalone: %+v", p.Name(), *got[i], *want)
		}
	}
}
