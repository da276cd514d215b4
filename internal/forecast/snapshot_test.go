package forecast

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

// snapCfg is small enough that the rings wrap and both seasonal components
// join within a few hundred samples.
var snapCfg = Config{Step: 300, Day: 300 * 40, Capacity: 300}

func feed(e *Engine, rng *rand.Rand, ids []string, n int) {
	for range n {
		for k, id := range ids {
			e.VM(id).ObserveAll(model.Resources{
				CPU: 0.3 + 0.2*rng.Float64() + 0.01*float64(k), Mem: 0.5 + 0.05*rng.NormFloat64(),
				Net: 100 * rng.ExpFloat64(), Disk: 20 + rng.Float64()})
		}
	}
}

// sameForecasts fails unless both engines forecast bit-identically for ids.
func sameForecasts(t *testing.T, a, b *Engine, ids []string) {
	t.Helper()
	for _, id := range ids {
		for _, c := range []float64{0.5, 0.9, 0.97} {
			fa, _ := a.Forecast(id, 6, c)
			fb, ok := b.Forecast(id, 6, c)
			if !ok {
				t.Fatalf("%s missing after load", id)
			}
			if fa.Horizon() != 6 || fb.Horizon() != 6 || len(fb.PredictedDiskIO) != 6 {
				t.Fatalf("%s: %d vs %d steps", id, fa.Horizon(), fb.Horizon())
			}
			for i := range 6 {
				if fa.Point(i) != fb.Point(i) || fa.Upper[i] != fb.Upper[i] {
					t.Fatalf("%s step %d at %v: %+v/%+v vs %+v/%+v", id, i+1, c,
						fa.Point(i), fa.Upper[i], fb.Point(i), fb.Upper[i])
				}
			}
		}
		for _, r := range model.AllResources {
			x := a.ProbExceed(id, r, 0.45, 6)
			if y := b.ProbExceed(id, r, 0.45, 6); x != y && !(math.IsNaN(x) && math.IsNaN(y)) {
				t.Fatalf("%s %v: ProbExceed %v vs %v", id, r, x, y)
			}
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	ids := []string{"a", "b", "c"}
	for _, n := range []int{1, 5, 50, 700} { // young, pre-horizon, pre-season, wrapped
		a, _ := NewEngine(snapCfg)
		rng := rand.New(rand.NewPCG(1, uint64(n)))
		feed(a, rng, ids, n)
		var buf bytes.Buffer
		if err := a.Save(&buf); err != nil {
			t.Fatal(err)
		}
		b, _ := NewEngine(snapCfg)
		if err := b.Load(bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if b.Len() != len(ids) {
			t.Fatalf("n=%d: %d VMs loaded", n, b.Len())
		}
		sameForecasts(t, a, b, ids)
		// The state, not only the cached forecast, must be the same: both
		// engines must keep forecasting alike on new samples.
		for i := range 400 {
			seed := uint64(i)
			feed(a, rand.New(rand.NewPCG(2, seed)), ids, 1)
			feed(b, rand.New(rand.NewPCG(2, seed)), ids, 1)
			if i%37 == 0 || i == 399 {
				sameForecasts(t, a, b, ids)
			}
		}
	}
}

// Loading over a live engine keeps the callers' VM handles.
func TestSnapshotLoadKeepsHandles(t *testing.T) {
	a, _ := NewEngine(snapCfg)
	feed(a, rand.New(rand.NewPCG(3, 3)), []string{"x"}, 100)
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}
	b, _ := NewEngine(snapCfg)
	h := b.VM("x")
	h.Observe(model.CPU, 5)
	if err := b.Load(&buf); err != nil {
		t.Fatal(err)
	}
	if got, want := h.Forecast(1, 0.9).PredictedCPU[0], a.VM("x").Forecast(1, 0.9).PredictedCPU[0]; got != want {
		t.Fatalf("handle forecasts %v, want the snapshot's %v", got, want)
	}
}

func TestSnapshotCorrupt(t *testing.T) {
	a, _ := NewEngine(snapCfg)
	feed(a, rand.New(rand.NewPCG(4, 4)), []string{"a", "b"}, 120)
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	other, _ := NewEngine(Config{Step: 300, Day: 300 * 40, Capacity: 300, Horizon: 12})
	for name, c := range map[string]struct {
		e *Engine
		b []byte
	}{
		"empty":     {nil, nil},
		"truncated": {nil, good[:len(good)-9]},
		"flipped":   {nil, flipped},
		"garbage":   {nil, bytes.Repeat([]byte{7}, 1000)},
		"config":    {other, good},
	} {
		e := c.e
		if e == nil {
			e, _ = NewEngine(snapCfg)
		}
		e.VM("keep").Observe(model.CPU, 1)
		err := e.Load(bytes.NewReader(c.b))
		if !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: error %v, want ErrSnapshot", name, err)
		}
		if e.Len() != 1 || e.Lookup("a") != nil {
			t.Errorf("%s: a failed load changed the engine (%d VMs)", name, e.Len())
		}
	}
}

// withCRC re-seals a mutated body so that the fuzzer reaches the decoder
// behind the checksum.
func withCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(b), crc32.ChecksumIEEE(b))
}

func FuzzSnapshotLoad(f *testing.F) {
	small := Config{Step: 300, Day: 300 * 8, Capacity: 128, Horizon: 3}
	for _, n := range []int{1, 4, 30, 200} {
		a, _ := NewEngine(small)
		feed(a, rand.New(rand.NewPCG(5, uint64(n))), []string{"v"}, n)
		var buf bytes.Buffer
		if err := a.Save(&buf); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes()[:buf.Len()-4])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, _ := NewEngine(small)
		if err := e.Load(bytes.NewReader(withCRC(body))); err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("error %v does not wrap ErrSnapshot", err)
			}
			if e.Len() != 0 {
				t.Fatal("failed load left VMs behind")
			}
			return
		}
		// Whatever loaded must forecast, observe and save without panicking.
		e.mu.RLock()
		var vms []*VM
		for _, v := range e.ids {
			vms = append(vms, v)
		}
		e.mu.RUnlock()
		for _, v := range vms {
			v.Forecast(3, 0.9)
			for range 30 {
				v.ObserveAll(model.Resources{CPU: 1, Mem: 2, Net: 3, Disk: 4})
			}
			v.Forecast(3, 0.9)
			v.ProbExceed(model.CPU, 1, 3)
		}
		if err := e.Save(&bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
	})
}

// Snapshots keep float32 samples whatever the history's width, so one saved
// by a 32-bit engine (the only kind before 16-bit history) loads into a
// 16-bit one and vice versa: the cached forecasts are the same, and after
// more samples the two differ only by rounding.
func TestSnapshotAcrossHistoryWidths(t *testing.T) {
	ids := []string{"a", "b"}
	for _, bits := range [][2]int{{32, 16}, {16, 32}} {
		from, to := snapCfg, snapCfg
		from.HistoryBits, to.HistoryBits = bits[0], bits[1]
		a, _ := NewEngine(from)
		feed(a, rand.New(rand.NewPCG(9, 9)), ids, 700)
		var buf bytes.Buffer
		if err := a.Save(&buf); err != nil {
			t.Fatal(err)
		}
		b, _ := NewEngine(to)
		if err := b.Load(&buf); err != nil {
			t.Fatalf("%d -> %d bits: %v", bits[0], bits[1], err)
		}
		sameForecasts(t, a, b, ids)
		for i := range 300 {
			feed(a, rand.New(rand.NewPCG(4, uint64(i))), ids, 1)
			feed(b, rand.New(rand.NewPCG(4, uint64(i))), ids, 1)
		}
		for _, id := range ids {
			fa, _ := a.Forecast(id, 6, 0.9)
			fb, _ := b.Forecast(id, 6, 0.9)
			for i := range 6 {
				for _, r := range model.AllResources {
					x, y := fa.Upper[i].Get(r), fb.Upper[i].Get(r)
					if math.Abs(x-y) > 0.01*math.Abs(x)+1e-9 {
						t.Errorf("%d -> %d bits, %s %v step %d: bound %v vs %v", bits[0], bits[1], id, r, i+1, x, y)
					}
				}
			}
		}
	}
}
