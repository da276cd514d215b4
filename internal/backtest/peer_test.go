package backtest

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
)

// TestPeerRForecast runs R's forecast package on a small sample, on the
// origins Run scores, and checks its rows are present, finite and on exactly
// the same origins as headroom's.
func TestPeerRForecast(t *testing.T) {
	if err := CheckR(context.Background(), ""); err != nil {
		if os.Getenv(lab.RequiredEnv) == "1" {
			t.Fatalf("%v (%s=1)", err, lab.RequiredEnv)
		}
		t.Skip(err)
	}
	w := load(t, "planetlab:testdata/planetlab")
	opts := Options{Horizon: 6, Confidence: 0.9, Every: 144, EveryVM: 3}
	r, err := Run(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(t.TempDir(), "r.txt")
	sc, err := RunPeer(context.Background(), w, opts, PeerRForecast, PeerOptions{Procs: 2, Results: keep})
	if err != nil {
		t.Fatal(err)
	}
	// The kept forecasts are re-scored without running R, to the same figures.
	again, err := RunPeer(context.Background(), w, opts, PeerRForecast, PeerOptions{Rscript: "/nonexistent/Rscript", Results: keep})
	if err != nil {
		t.Fatalf("reusing %s: %v", keep, err)
	}
	if !reflect.DeepEqual(again, sc) {
		t.Errorf("re-scored from %s:\n%+v\nwant\n%+v", keep, again, sc)
	}
	other := opts
	other.Every = 72
	if _, err := RunPeer(context.Background(), w, other, PeerRForecast, PeerOptions{Rscript: "/nonexistent/Rscript", Results: keep}); err == nil || !strings.Contains(err.Error(), "other series") {
		t.Errorf("results for other origins reused: %v", err)
	}
	r.Models = append(r.Models, sc...)
	def := find(r, "default", "cpu")
	if want := int64(2 * 2 * 6); def.N != want { // 2 VMs, origins 12 and 156, 6 steps
		t.Fatalf("default scored %d forecasts, want %d", def.N, want)
	}
	for _, name := range Peers[PeerRForecast] {
		s := find(r, name, "cpu")
		if s.N != def.N {
			t.Errorf("%s: n = %d, want %d (the same origins as default)", name, s.N, def.N)
		}
		for what, v := range map[string]float64{"mae": s.MAE, "rmse": s.RMSE, "pinball": s.Pinball, "coverage": s.Coverage} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Errorf("%s: %s = %v", name, what, v)
			}
		}
		if !(s.MAE > 0) {
			t.Errorf("%s: MAE %v", name, s.MAE)
		}
		if len(s.MAEByStep) != 6 {
			t.Errorf("%s: %d steps", name, len(s.MAEByStep))
		}
	}
	txt := r.Text()
	for _, want := range []string{"r-ses", "r-ets", "r-theta", "r-arima", "every 144th origin", "every 3rd VM", "same subset"} {
		if !strings.Contains(txt, want) {
			t.Errorf("table lacks %q:\n%s", want, txt)
		}
	}
}

func TestPeerWithoutR(t *testing.T) {
	w := load(t, "planetlab:testdata/planetlab")
	_, err := RunPeer(context.Background(), w, Options{Horizon: 6, Confidence: 0.9}, PeerRForecast, PeerOptions{Rscript: "/nonexistent/Rscript"})
	if !errors.Is(err, ErrNoR) || !strings.Contains(err.Error(), "r-cran-forecast") {
		t.Fatalf("error %v, want one saying R's forecast package is missing", err)
	}
	if _, err := RunPeer(context.Background(), w, Options{Horizon: 6, Confidence: 0.9}, "python-prophet", PeerOptions{}); err == nil || !strings.Contains(err.Error(), "python-prophet") {
		t.Fatalf("unknown peer: %v", err)
	}
}

func peerFixture() (*trace.Workload, []model.Resource, Options, map[string][]acc) {
	x := make([]float32, 40)
	for i := range x {
		x[i] = float32(i)
	}
	w := &trace.Workload{Step: 300, VMs: []trace.Series{{ID: "a", CPU: x}}}
	opts := Options{Horizon: 2, Confidence: 0.9, Warmup: 12, Every: 2}
	accs := map[string][]acc{}
	for _, n := range Peers[PeerRForecast] {
		accs[n] = []acc{{step: make([]float64, 2)}}
	}
	return w, []model.Resource{model.CPU}, opts, accs
}

func TestPeerLineScoring(t *testing.T) {
	w, rs, opts, accs := peerFixture()
	// Origin 14 targets samples 14 and 15; forecasts off by 1 and 3.
	if err := scorePeerLine("0:0,14,ses,13,18,20,20", w, rs, opts, accs); err != nil {
		t.Fatal(err)
	}
	a := accs["r-ses"][0]
	if a.n != 2 || a.abs != 4 || a.cov != 2 {
		t.Fatalf("scored %+v, want n=2 abs=4 cov=2", a)
	}
	for _, bad := range []string{
		"0:0,13,ses,1,2,3,4",   // not a scored origin (every 2nd from 12)
		"0:0,40,ses,1,2,3,4",   // no full horizon ahead
		"0:1,14,ses,1,2,3,4",   // no such resource
		"0:0,14,naive,1,2,3,4", // no such model
		"0:0,14,ses,1,2,3",     // short
		"0:0,14,ses,1,NaN,3,4", // not a number
	} {
		if err := scorePeerLine(bad, w, rs, opts, accs); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzPeerLine(f *testing.F) {
	f.Add("0:0,14,ses,13,18,20,20")
	f.Add("0:0,12,arima,1e300,-1e300,Inf,0")
	f.Fuzz(func(t *testing.T, line string) {
		w, rs, opts, accs := peerFixture()
		if err := scorePeerLine(line, w, rs, opts, accs); err != nil {
			return
		}
		var n int64
		for _, a := range accs {
			n += a[0].n
		}
		if n != 2 {
			t.Fatalf("an accepted line scored %d forecasts, want 2", n)
		}
	})
}
