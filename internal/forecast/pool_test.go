package forecast

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// poolFleet is n VMs of e and one interval's samples for them.
func poolFleet(e *Engine, n int) ([]*VM, []model.Resources) {
	vms := make([]*VM, n)
	for i := range vms {
		vms[i] = e.VM(fmt.Sprint("vm", i))
	}
	return vms, make([]model.Resources, n)
}

// poolSample is VM i's sample at step t: VMs of several kinds, so that the
// fleet's prior favours some components.
func poolSample(rng *rand.Rand, i, t int) model.Resources {
	switch i % 3 {
	case 0: // noisy around a level: the medians win
		return model.Resources{CPU: 0.4 + 0.3*rng.Float64(), Mem: 0.5, Net: 100 * rng.ExpFloat64(), Disk: 5 + rng.Float64()}
	case 1: // a random walk: the last value wins
		return model.Resources{CPU: 0.5 + 0.01*float64(t%50) + 0.05*rng.Float64(), Mem: 0.3 + 0.001*float64(t), Net: 50 + float64(t%20), Disk: 3}
	}
	return model.Resources{CPU: 0.2 + 0.1*rng.NormFloat64()*rng.NormFloat64(), Mem: 0.6 + 0.05*rng.Float64(), Net: 10 * rng.Float64(), Disk: float64(t % 7)}
}

// The prior a forecast uses is published after the whole batch, so the last
// VM of a batch forecasts the same whatever the others' samples in that batch
// (they reach it from the next batch on, never within its own step).
func TestPriorNeverUsesTheBatchItForecastsFrom(t *testing.T) {
	const n, steps, cut = 30, 120, 100
	run := func(change bool) (at, after [6]float64) {
		e, _ := NewEngine(Config{})
		vms, d := poolFleet(e, n)
		rng := rand.New(rand.NewPCG(5, 6))
		other := rand.New(rand.NewPCG(9, 9))
		for t := range steps + 1 {
			for i := range d {
				d[i] = poolSample(rng, i, t)
				if change && t == cut && i < n-1 {
					d[i] = poolSample(other, i+1, t) // every VM but the last
				}
			}
			e.ObserveBatch(vms, d)
			f := vms[n-1].Forecast(6, 0.9)
			for s := range 6 {
				switch t {
				case cut:
					at[s] = f.PredictedCPU[s]
				case cut + 1:
					after[s] = f.PredictedCPU[s]
				}
			}
		}
		return at, after
	}
	baseAt, baseAfter := run(false)
	at, after := run(true)
	if at != baseAt {
		t.Fatalf("the last VM's forecast at step %d used the same batch's other samples: %v vs %v", cut, at, baseAt)
	}
	if after == baseAfter {
		t.Fatalf("the others' samples at step %d never reached the last VM's forecast (is the prior used?)", cut)
	}
}

// A VM's forecasts up to an origin do not depend on any VM's later samples.
func TestPriorNeverUsesTheFuture(t *testing.T) {
	const n, steps, cut = 12, 200, 150
	run := func(change bool) [][6]float64 {
		e, _ := NewEngine(Config{})
		vms, d := poolFleet(e, n)
		rng := rand.New(rand.NewPCG(1, 1))
		other := rand.New(rand.NewPCG(2, 2))
		var out [][6]float64
		for t := range steps {
			for i := range d {
				d[i] = poolSample(rng, i, t)
				if change && t >= cut && i != 0 {
					d[i] = poolSample(other, i+1, t)
				}
			}
			e.ObserveBatch(vms, d)
			var p [6]float64
			copy(p[:], vms[0].Forecast(6, 0.9).PredictedCPU)
			out = append(out, p)
		}
		return out
	}
	a, b := run(false), run(true)
	for i := range cut {
		if a[i] != b[i] {
			t.Fatalf("origin %d changed by samples from %d on: %v vs %v", i, cut, a[i], b[i])
		}
	}
	differ := 0
	for t := cut; t < steps; t++ {
		if a[t] != b[t] {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("other VMs' samples never moved VM 0's forecasts: the test tests nothing")
	}
}

// The prior is in the snapshot: an engine loaded from one keeps forecasting
// exactly as the saved one on new batches.
func TestSnapshotKeepsThePrior(t *testing.T) {
	a, _ := NewEngine(snapCfg)
	vms, d := poolFleet(a, 20)
	rng := rand.New(rand.NewPCG(3, 3))
	step := func(e *Engine, vms []*VM, rng *rand.Rand, t int) {
		for i := range d {
			d[i] = poolSample(rng, i, t)
		}
		e.ObserveBatch(vms, d)
	}
	for t := range 300 {
		step(a, vms, rng, t)
	}
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}
	b, _ := NewEngine(snapCfg)
	if err := b.Load(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	for r := range 4 {
		pa, pb := a.sh.pool.tab[r].Load(), b.sh.pool.tab[r].Load()
		if pa == nil || pb == nil || *pa != *pb {
			t.Fatalf("resource %d: prior %v saved, %v loaded", r, pa, pb)
		}
	}
	vb, _ := poolFleet(b, 20)
	ra, rb := rand.New(rand.NewPCG(4, 4)), rand.New(rand.NewPCG(4, 4))
	ids := make([]string, len(vms))
	for i, v := range vms {
		ids[i] = v.ID
	}
	for k := range 50 {
		step(a, vms, ra, 300+k)
		step(b, vb, rb, 300+k)
		sameForecasts(t, a, b, ids)
	}
}

// A snapshot of the first format (no prior), made by the engine before the
// prior existed, still loads and forecasts what it saved; the prior then
// learns from the next batch.
func TestSnapshotV1Loads(t *testing.T) {
	old, err := os.ReadFile("testdata/snapshot-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(old, []byte(snapMagicV1)) {
		t.Fatal("testdata is not a first-format snapshot")
	}
	ids := []string{"a", "b", "c"}
	// What made it: feed with ObserveAll, which learns no prior, and forecast
	// the blend's weighted mean, so this engine's state is the old engine's.
	a, _ := NewEngine(snapCfg)
	a.sh.meanOnly = true
	feed(a, rand.New(rand.NewPCG(7, 8)), ids, 300)
	b, _ := NewEngine(snapCfg)
	if err := b.Load(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	sameForecasts(t, a, b, ids)
	for r := range 4 {
		if b.sh.pool.tab[r].Load() != nil {
			t.Fatalf("resource %d: a prior from a snapshot that has none", r)
		}
	}
	vms := []*VM{b.VM("a"), b.VM("b"), b.VM("c")}
	b.ObserveBatch(vms, []model.Resources{{CPU: 0.3, Mem: 0.5, Net: 90, Disk: 20}, {CPU: 0.4, Mem: 0.5, Net: 80, Disk: 21}, {CPU: 0.5, Mem: 0.4, Net: 70, Disk: 20.5}})
	if b.sh.pool.tab[model.CPU].Load() == nil {
		t.Fatal("no prior after a batch")
	}
	// And a new snapshot of it is of the new format and round-trips.
	var buf bytes.Buffer
	if err := b.Save(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte(snapMagic)) {
		t.Fatalf("saved as %q", buf.Bytes()[:8])
	}
	c, _ := NewEngine(snapCfg)
	if err := c.Load(&buf); err != nil {
		t.Fatal(err)
	}
	sameForecasts(t, b, c, ids)
}

// A prior out of range is refused like any other corrupt state.
func TestSnapshotBadPrior(t *testing.T) {
	a, _ := NewEngine(snapCfg)
	vms, d := poolFleet(a, 3)
	rng := rand.New(rand.NewPCG(1, 2))
	for t := range 20 {
		for i := range d {
			d[i] = poolSample(rng, i, t)
		}
		a.ObserveBatch(vms, d)
	}
	a.sh.pool.sum[0][0][1] = a.sh.pool.cnt[0][0][1] + 1 // a mean above 1
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}
	b, _ := NewEngine(snapCfg)
	if err := b.Load(&buf); err == nil {
		t.Fatal("a prior with a mean above 1 loaded")
	}
}

// However the fleet's prior scores the components, a young series still
// forecasts a number: its weights cannot all vanish.
func TestPriorNeverZeroesEveryWeight(t *testing.T) {
	e, _ := NewEngine(Config{})
	t0 := &priorTab{}
	for g := range t0.p {
		for k := range t0.p[g] {
			t0.p[g][k] = 1 // every component the fleet's worst
			t0.n0[g][k] = 1e6
		}
	}
	for r := range e.sh.pool.tab {
		e.sh.pool.tab[r].Store(t0)
	}
	v := e.VM("young")
	for i := range 30 {
		v.ObserveAll(model.Resources{CPU: float64(i % 5), Mem: 1, Net: float64(i * i), Disk: 2})
		f := v.Forecast(6, 0.9)
		for s := range 6 {
			if p := f.PredictedNetworkIO[s]; p != p || f.Upper[s].CPU != f.Upper[s].CPU {
				t.Fatalf("sample %d step %d: NaN forecast", i, s+1)
			}
		}
	}
}

// n0 is read from the fleet: series that agree make a prior worth the whole
// loss memory; series that disagree, one worth a few samples.
func TestPriorStrengthFollowsTheFleetsSpread(t *testing.T) {
	pl := newPool(Params{Step: 300, Horizon: 6})
	var acc poolAcc
	L := make([]float32, nComp)
	for i := range 100 {
		for k := range L {
			L[k] = 1 + 0.2*float32(k)
		}
		L[1] = 1 + float32(i%2)              // component 1: as good as the best or twice as bad
		L[cDay], L[cWeek] = offLoss, offLoss // not in any series' blend
		acc.add(0, L, 1)
	}
	pl.merge(0, &acc, 100, 100)
	tab := pl.tab[0].Load()
	if tab == nil {
		t.Fatal("no prior published")
	}
	if got := tab.p[0][2]; math.Abs(float64(got)-0.4) > 1e-6 {
		t.Errorf("P_2 = %v, want 0.4", got)
	}
	if got := tab.n0[0][2]; got != 288 {
		t.Errorf("series that agree: n0 = %v, want the loss memory 288", got)
	}
	if got := tab.n0[0][1]; math.Abs(float64(got)-4) > 1e-3 { // variance 1/4
		t.Errorf("series that disagree: n0 = %v, want 4", got)
	}
	if got := tab.n0[0][cDay]; got != 0 {
		t.Errorf("a component no series has: n0 = %v, want 0", got)
	}
}

// One interval observed in parts (ObserveInto, in any order, then one Learn)
// learns the prior one ObserveBatch of the whole interval learns, bit for bit:
// the controller observes its fleet in concurrent parts.
func TestPartsLearnAsOneBatch(t *testing.T) {
	const n, steps = 40, 60
	whole, _ := NewEngine(Config{})
	parted, _ := NewEngine(Config{})
	wv, d := poolFleet(whole, n)
	pv, _ := poolFleet(parted, n)
	rng := rand.New(rand.NewPCG(1, 2))
	order := rand.New(rand.NewPCG(3, 4))
	for st := range steps {
		for i := range d {
			d[i] = poolSample(rng, i, st)
		}
		whole.ObserveBatch(wv, d)
		cuts := []int{0, order.IntN(n), order.IntN(n), n}
		if cuts[1] > cuts[2] {
			cuts[1], cuts[2] = cuts[2], cuts[1]
		}
		parts := make([]*Errors, 3)
		for _, k := range order.Perm(3) {
			parts[k] = new(Errors)
			parted.ObserveInto(parts[k], pv[cuts[k]:cuts[k+1]], d[cuts[k]:cuts[k+1]])
		}
		order.Shuffle(3, func(a, b int) { parts[a], parts[b] = parts[b], parts[a] })
		parted.Learn(parts...)
		for i := range wv {
			a, b := wv[i].Forecast(6, 0.9), pv[i].Forecast(6, 0.9)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("step %d, VM %d: parts forecast %v, one batch %v", st, i, b, a)
			}
		}
	}
	for r := range 4 {
		if a, b := whole.sh.pool.tab[r].Load(), parted.sh.pool.tab[r].Load(); (a == nil) != (b == nil) || a != nil && *a != *b {
			t.Fatalf("resource %d: the priors differ", r)
		}
	}
}
