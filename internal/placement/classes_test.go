package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/policy"
)

// randomState is a fleet of a few host types, most hosts empty, some emptied in the
// what-if (measured utilisation above 0, no VMs left), VMs of random sizes and
// forecasts, and a few rules.
func randomState(rng *rand.Rand) *cluster.State {
	types := []model.Host{
		{Capacity: model.Resources{CPU: 4000, Mem: 8192, Net: 1e6}, PEs: 2, PEMIPS: 2000, Power: model.PowerCurve{86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117}},
		{Capacity: model.Resources{CPU: 6000, Mem: 8192, Net: 1e6}, PEs: 2, PEMIPS: 3000, Power: model.PowerCurve{93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135}},
		{Capacity: model.Resources{CPU: 6000, Mem: 16384, Net: 1e6, Disk: 500}, PEs: 4, PEMIPS: 1500},
	}
	s := &model.Snapshot{Interval: 300}
	nh := 5 + rng.IntN(60)
	for h := range nh {
		x := types[rng.IntN(len(types))]
		x.ID = fmt.Sprintf("h%d", h)
		s.Hosts = append(s.Hosts, x)
	}
	nv := rng.IntN(3 * nh)
	steps := rng.IntN(4)
	var fc []model.ResourceForecast
	for v := range nv {
		size := model.Resources{CPU: []float64{500, 1000, 2000, 2500}[rng.IntN(4)], Mem: []float64{613, 1740, 870}[rng.IntN(3)], Net: 1000, Disk: 50}
		vm := model.VM{ID: fmt.Sprintf("v%d", v), Host: -1, Size: size, VCPU: 1,
			Demand: model.Resources{CPU: size.CPU * rng.Float64(), Mem: size.Mem * rng.Float64(), Disk: 60 * rng.Float64()}}
		if rng.IntN(4) > 0 { // a quarter wait for a host
			h := rng.IntN(nh/3 + 1) // crowd the first hosts, leave the rest empty
			vm.Host = h
			s.Hosts[h].VMs = append(s.Hosts[h].VMs, v)
		}
		for range rng.IntN(8) {
			vm.History = append(vm.History, rng.Float64())
		}
		s.VMs = append(s.VMs, vm)
		f := model.ResourceForecast{VMInstanceID: vm.ID, Step: 300, Confidence: 0.9, Peak: model.Resources{CPU: size.CPU * rng.Float64()}}
		for range steps {
			p := vm.Demand.CPU * (0.5 + rng.Float64())
			f.PredictedCPU = append(f.PredictedCPU, p)
			f.Upper = append(f.Upper, model.Resources{CPU: p * (1 + rng.Float64())})
		}
		fc = append(fc, f)
	}
	for h := range s.Hosts {
		if len(s.Hosts[h].VMs) > 0 {
			s.Hosts[h].Util = rng.Float64()
		}
	}
	if nv > 4 && rng.IntN(3) == 0 {
		s.Rules = []model.Rule{
			{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"v0", "v1"}},
			{Name: "pinned", Kind: model.HostAffinity, Must: true, VMs: []string{"v2"}, Hosts: []string{"h3", fmt.Sprintf("h%d", nh-1)}},
			{Name: "near", Kind: model.Affinity, VMs: []string{"v3", "v4"}},
		}
	}
	if steps == 0 {
		fc = nil
	}
	st := cluster.New(s, fc)
	// Empty some hosts in the what-if: their measured utilisation stays.
	for h := range s.Hosts {
		if rng.IntN(5) == 0 {
			for _, v := range append([]int(nil), st.VMs(h)...) {
				st.Remove(v, h)
			}
		}
	}
	return st
}

// randomSelection draws a random fleet, a chain of the filters with random
// scorer weights, exclusions (or none) and a context, for the tests that check
// a quicker search against a full one.
func randomSelection(t *testing.T, rng *rand.Rand, names []string) (*cluster.State, *Chain, []bool, *Context) {
	t.Helper()
	st := randomState(rng)
	var ws []float64
	for range names {
		ws = append(ws, float64(rng.IntN(3))*0.5)
	}
	ch, err := NewChain([]string{"capacity", "anti-affinity", "affinity", "host-affinity"}, names, ws)
	if err != nil {
		t.Fatal(err)
	}
	var excl []bool
	if rng.IntN(2) == 0 {
		excl = make([]bool, len(st.Snap.Hosts))
		for h := range excl {
			excl[h] = rng.IntN(4) == 0
		}
	}
	c := NewContext(st, policy.Z(0.5+0.49*rng.Float64()), 0.7+0.3*rng.Float64())
	c.Resources = []model.Resource{model.CPU, model.Mem, model.Disk}[:1+rng.IntN(3)]
	c.Peaks = rng.IntN(2) == 0
	return st, ch, excl, c
}

// Looking at one empty host per class must choose the very host a scan of every
// host chooses, with the same rejection counts, for any chain and exclusions.
func TestSkippingEmptyHostsChoosesAsTheFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 15))
	_, names := StepNames()
	differ := 0
	for i := range 3000 {
		st, ch, excl, c := randomSelection(t, rng, names)
		ref := NewContext(st, c.Z, c.Target)
		ref.Resources, ref.Peaks, ref.Limits = c.Resources, c.Peaks, c.Limits
		pabfd := PABFD{Detector: policy.Threshold{T: 0.5 + 0.5*rng.Float64()}}
		for v := range st.Snap.VMs {
			got, gc := ch.Select(c, v, excl, false)
			want, wc := ch.selectHost(ref, v, excl, false, false)
			if got != want || RejectionSummary(gc) != RejectionSummary(wc) {
				t.Fatalf("case %d vm %d: indexed chose %d (%s), full scan %d (%s)", i, v, got, RejectionSummary(gc), want, RejectionSummary(wc))
			}
			if got, want := pabfd.Find(st, v, excl), pabfdScan(pabfd, st, v, excl); got != want {
				t.Fatalf("case %d vm %d: PABFD indexed chose %d, full scan %d", i, v, got, want)
			}
			if got, want := pabfd.find(st, v, excl, false), pabfdScan(pabfd, st, v, excl); got != want {
				t.Fatalf("case %d vm %d: PABFD without classes chose %d, full scan %d", i, v, got, want)
			}
			info := infoOf(st)
			info.pabfd(st)
			for h := range st.Snap.Hosts {
				need := st.Need(v).CPU
				if f, g := info.floor(st, need, h), powerDeltaFloor(st, v, h); f != g && !(math.IsNaN(f) && math.IsNaN(g)) {
					t.Fatalf("case %d vm %d host %d: floor %g, powerDeltaFloor %g", i, v, h, f, g)
				}
				if f, g := info.delta(st, need, h), PowerDelta(st, v, h); f != g && !(math.IsNaN(f) && math.IsNaN(g)) {
					t.Fatalf("case %d vm %d host %d: delta %g, PowerDelta %g", i, v, h, f, g)
				}
			}
			if got >= 0 {
				differ++
			}
			for h := range st.Snap.Hosts {
				if st.Suitable(v, h) {
					if f, d := powerDeltaFloor(st, v, h), PowerDelta(st, v, h); f > d {
						t.Fatalf("case %d vm %d host %d: power rise floor %g above the rise %g", i, v, h, f, d)
					}
				}
			}
			// Place it now and then, so later selections see hosts fill and empty.
			if got >= 0 && st.HostOf(v) < 0 && rng.IntN(2) == 0 {
				st.Add(v, got)
			}
		}
	}
	if differ == 0 {
		t.Fatal("no selection found a host: the test checks nothing")
	}
}

// pabfdScan is CloudSim's PABFD as a plain scan of every host in index order:
// room, then the smallest power rise, then the detector; ties to the lowest index.
func pabfdScan(p PABFD, st *cluster.State, v int, excluded []bool) int {
	best, bestDelta := -1, math.MaxFloat64
	for h := range st.Snap.Hosts {
		if excluded != nil && excluded[h] || !st.Suitable(v, h) {
			continue
		}
		d := PowerDelta(st, v, h)
		if d >= bestDelta {
			continue
		}
		if st.InUse(h) != 0 && p.Detector.Overloaded(st, h, v) {
			continue
		}
		best, bestDelta = h, d
	}
	return best
}

// The fleetView a selection reads is kept in step with the State's changes: as
// VMs are added, removed and moved (hosts filling and emptying), every selection
// through it must choose as the scan of every host, with the same counts, with
// and without ExcludeAlso; and the view must list exactly the running hosts and
// the empty hosts of each class.
func TestFleetViewFollowsTheState(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 27))
	_, names := StepNames()
	moved, emptied := 0, 0
	for i := range 1500 {
		st, ch, excl, c := randomSelection(t, rng, names)
		ref := NewContext(st, c.Z, c.Target)
		ref.Resources, ref.Peaks, ref.Limits = c.Resources, c.Peaks, c.Limits
		n := len(st.Snap.Hosts)
		for round := range 3 * len(st.Snap.VMs) {
			v := rng.IntN(len(st.Snap.VMs))
			if round%2 == 1 {
				seed := rng.Uint64()
				c.ExcludeAlso = func(v, h int) bool { return (uint64(v*131+h*7)^seed)%4 == 0 }
				ref.ExcludeAlso = c.ExcludeAlso
			} else {
				c.ExcludeAlso, ref.ExcludeAlso = nil, nil
			}
			got, gc := ch.Select(c, v, excl, false)
			want, wc := ch.selectHost(ref, v, excl, false, false)
			if got != want || RejectionSummary(gc) != RejectionSummary(wc) {
				t.Fatalf("case %d round %d vm %d: through the view %d (%s), full scan %d (%s)", i, round, v, got, RejectionSummary(gc), want, RejectionSummary(wc))
			}
			if c.info != nil {
				fv := c.info.view(st)
				var run []int32
				emp := map[int32][]int32{}
				for h := range n {
					if len(st.VMs(h)) > 0 {
						run = append(run, int32(h))
					} else {
						emp[c.classes[h]] = append(emp[c.classes[h]], int32(h))
					}
				}
				if !slices.Equal(run, fv.running) || len(emp) != len(fv.active) {
					t.Fatalf("case %d round %d: view lists %v running, %d classes with empties; the State %v, %d", i, round, fv.running, len(fv.active), run, len(emp))
				}
				for k, l := range emp {
					if !slices.Equal(l, fv.empties[k]) || fv.active[fv.at[k]] != k {
						t.Fatalf("case %d round %d class %d: view %v, State %v", i, round, k, fv.empties[k], l)
					}
				}
			}
			// Move, remove or place a VM.
			h := st.HostOf(v)
			switch {
			case h >= 0 && rng.IntN(3) == 0:
				st.Remove(v, h)
				if len(st.VMs(h)) == 0 {
					emptied++
				}
			case h >= 0:
				st.Remove(v, h)
				st.Add(v, rng.IntN(n))
				moved++
			default:
				st.Add(v, rng.IntN(n))
			}
		}
	}
	if moved == 0 || emptied == 0 {
		t.Fatalf("%d moves, %d hosts emptied: the test checks little", moved, emptied)
	}
}

// classIDs finds a host's type by comparing fields and hashes only (type,
// utilisation); it must number hosts as hashing the whole class does, for few
// and many types, repeated utilisations, NaN and signed zeros.
func TestClassIDsAsThePlainHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 11))
	for i := range 500 {
		nTypes := 1 + rng.IntN(40)
		types := make([]model.Host, nTypes)
		for k := range types {
			types[k] = model.Host{Capacity: model.Resources{CPU: float64(1 + rng.IntN(3)), Mem: float64(rng.IntN(2))},
				PEs: 1 + rng.IntN(2), PEMIPS: float64(rng.IntN(3))}
			for j := range types[k].Power {
				types[k].Power[j] = float64(rng.IntN(2))
			}
			switch rng.IntN(10) {
			case 0:
				types[k].PEMIPS = math.NaN()
			case 1:
				types[k].Capacity.Net = math.Copysign(0, -1)
			}
		}
		hs := make([]model.Host, 1+rng.IntN(300))
		for h := range hs {
			hs[h] = types[rng.IntN(nTypes)]
			switch rng.IntN(6) {
			case 0:
				hs[h].Util = rng.Float64()
			case 1:
				hs[h].Util = math.NaN()
			case 2:
				hs[h].Util = math.Copysign(0, -1)
			default:
				hs[h].Util = float64(rng.IntN(3)) / 4
			}
		}
		got, gn := classIDs(hs)
		want, wn := classIDsPlain(hs)
		if gn != wn || !slices.Equal(got, want) {
			t.Fatalf("case %d: classIDs %v (%d), plain %v (%d)", i, got, gn, want, wn)
		}
	}
}

// classIDsPlain is classIDs as first written, for the tests.
func classIDsPlain(hs []model.Host) ([]int32, int) {
	ids := make([]int32, len(hs))
	seen := map[hostClass]int32{}
	for h := range hs {
		k := hostClass{hs[h].Capacity, hs[h].PEs, hs[h].PEMIPS, hs[h].Power, hs[h].Util}
		id, ok := seen[k]
		if !ok {
			id = int32(len(seen))
			seen[k] = id
		}
		ids[h] = id
	}
	return ids, len(seen)
}
