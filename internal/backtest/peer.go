package backtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/trace"
	rscript "github.com/headroom/headroom/scripts/r"
)

// PeerRForecast runs R's forecast package (scripts/r/forecast.R) as a peer.
const PeerRForecast = "r-forecast"

// Peers are the external forecasters --peer accepts, with the rows each adds.
var Peers = map[string][]string{
	PeerRForecast: {"r-ses", "r-ets", "r-theta", "r-arima"},
}

// rModel maps forecast.R's model names to rows.
var rModel = map[string]string{"ses": "r-ses", "ets": "r-ets", "theta": "r-theta", "arima": "r-arima"}

// PeerOptions configure RunPeer.
type PeerOptions struct {
	Rscript string // the R interpreter; default "Rscript" from PATH
	// Procs is how many R processes run at once; default 1.
	Procs int
	// Window is the most samples before an origin R fits on; default the
	// engine's history (a week plus 64 samples), so both see the same past.
	Window int
	// Progress, if set, is called with (series done, total).
	Progress func(done, total int)
	// Results, if set, is a file that keeps R's raw forecasts: read instead
	// of running R when it holds forecasts for exactly these inputs, else
	// written after R runs. R takes minutes to hours; the engine's rows can
	// then be re-scored against the same R forecasts in seconds.
	Results string
}

// ErrNoR says R or its forecast package is missing.
var ErrNoR = errors.New("R's forecast package is not available: install r-base-core and r-cran-forecast (scripts/install-deps.sh does)")

// CheckR returns nil if rscript (default Rscript) runs and loads the forecast
// package, else an error wrapping ErrNoR that says what is missing.
func CheckR(ctx context.Context, rscript string) error {
	if rscript == "" {
		rscript = "Rscript"
	}
	path, err := exec.LookPath(rscript)
	if err != nil {
		return fmt.Errorf("%w (%s not found: %v)", ErrNoR, rscript, err)
	}
	out, err := exec.CommandContext(ctx, path, "-e", "suppressPackageStartupMessages(library(forecast))").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w (%s: %v: %s)", ErrNoR, path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// historyWindow is the engine's default history capacity at this step.
func historyWindow(step float64) int {
	if step <= 0 {
		step = 300
	}
	return int(7*86400/step+0.5) + 64
}

// origins lists the scored origins of an n-sample series: from the warm-up
// on, every opts.Every-th, each with a full horizon ahead.
func origins(n int, opts Options) []int {
	var o []int
	for i := opts.Warmup; i+opts.Horizon <= n; i += opts.Every {
		o = append(o, i)
	}
	return o
}

// RunPeer scores an external forecaster on exactly the series, origins and
// steps Run scores with the same opts, and returns one Score per row of
// Peers[peer] and resource, in Run's order. R fits each origin from scratch
// on the samples before it, at most po.Window of them.
func RunPeer(ctx context.Context, w *trace.Workload, opts Options, peer string, po PeerOptions) ([]Score, error) {
	rows, ok := Peers[peer]
	if !ok {
		return nil, fmt.Errorf("backtest: unknown peer %q (have %s)", peer, PeerRForecast)
	}
	if err := check(w, &opts); err != nil {
		return nil, err
	}
	w = subsetVMs(w, opts.EveryVM)
	if po.Rscript == "" {
		po.Rscript = "Rscript"
	}
	if po.Procs < 1 {
		po.Procs = 1
	}
	if po.Window == 0 {
		po.Window = historyWindow(w.Step)
	}
	// One line per VM and resource; the series are split into chunks that the
	// R processes take in turn, so that progress can be told.
	resources := resourcesOf(w)
	type job struct{ in, out string }
	var lines []string
	for i := range w.VMs {
		for ri, r := range resources {
			x := series(&w.VMs[i], r)
			var b strings.Builder
			fmt.Fprintf(&b, "%d:%d\t%d\t%d\t", i, ri, opts.Horizon, po.Window)
			for k, o := range origins(len(x), opts) {
				if k > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.Itoa(o))
			}
			b.WriteByte('\t')
			for k, v := range x {
				if k > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
			}
			lines = append(lines, b.String())
		}
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\n%g\n", rscript.Forecast, opts.Confidence)
	for _, l := range lines {
		io.WriteString(sum, l)
		sum.Write([]byte{'\n'})
	}
	header := fmt.Sprintf("# headroom r-forecast results %x", sum.Sum(nil))
	if po.Results != "" {
		if b, err := os.ReadFile(po.Results); err == nil {
			first, rest, _ := strings.Cut(string(b), "\n")
			if first != header {
				return nil, fmt.Errorf("backtest: --r-results %s: made for other series, origins, script or confidence; remove it to rerun R", po.Results)
			}
			return scorePeer([]string{rest}, w, resources, opts, rows)
		}
	}
	if err := CheckR(ctx, po.Rscript); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "headroom-r-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "forecast.R")
	if err := os.WriteFile(script, rscript.Forecast, 0o644); err != nil {
		return nil, err
	}

	nChunks := min(len(lines), po.Procs*16)
	jobs := make([]job, nChunks)
	per := make([]int, nChunks)
	for c := range jobs {
		lo, hi := c*len(lines)/nChunks, (c+1)*len(lines)/nChunks
		jobs[c] = job{filepath.Join(dir, fmt.Sprintf("in%d", c)), filepath.Join(dir, fmt.Sprintf("out%d", c))}
		per[c] = hi - lo
		if err := os.WriteFile(jobs[c].in, []byte(strings.Join(lines[lo:hi], "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, nChunks)
	conf := strconv.FormatFloat(opts.Confidence, 'g', -1, 64)
	for range min(po.Procs, nChunks) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c := int(next.Add(1) - 1)
				if c >= nChunks {
					return
				}
				var stderr bytes.Buffer
				cmd := exec.CommandContext(ctx, po.Rscript, script, jobs[c].in, jobs[c].out, conf)
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					errs[c] = fmt.Errorf("backtest: %s: %v: %s", PeerRForecast, err, strings.TrimSpace(stderr.String()))
					return
				}
				if po.Progress != nil {
					po.Progress(int(done.Add(int64(per[c]))), len(lines))
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	var outs []string
	for _, j := range jobs {
		b, err := os.ReadFile(j.out)
		if err != nil {
			return nil, err
		}
		outs = append(outs, string(b))
	}
	if po.Results != "" {
		if err := os.WriteFile(po.Results, []byte(header+"\n"+strings.Join(outs, "")), 0o644); err != nil {
			return nil, err
		}
	}
	return scorePeer(outs, w, resources, opts, rows)
}

// scorePeer scores R's output text against the same targets Run scores.
func scorePeer(outs []string, w *trace.Workload, resources []model.Resource, opts Options, rows []string) ([]Score, error) {
	accs := make(map[string][]acc, len(rows)) // row -> by resource
	for _, r := range rows {
		accs[r] = make([]acc, len(resources))
		for ri := range resources {
			accs[r][ri].step = make([]float64, opts.Horizon)
		}
	}
	seen := make(map[string]int64)
	for _, out := range outs {
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			if sc.Text() == "" {
				continue
			}
			if err := scorePeerLine(sc.Text(), w, resources, opts, accs); err != nil {
				return nil, err
			}
			seen[strings.SplitN(sc.Text(), ",", 4)[2]]++
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	// Every row must cover every origin, or it is not comparable.
	var want int64
	for i := range w.VMs {
		for _, r := range resources {
			want += int64(len(origins(len(series(&w.VMs[i], r)), opts)))
		}
	}
	var out []Score
	for _, name := range rows {
		for ri, r := range resources {
			a := accs[name][ri]
			out = append(out, score(name, r, a))
		}
	}
	for m, row := range rModel {
		if seen[m] != want {
			return nil, fmt.Errorf("backtest: %s: %s forecast %d origins, want %d", PeerRForecast, row, seen[m], want)
		}
	}
	return out, nil
}

// scorePeerLine scores one "vm:res,origin,model,f1..fh,u1..uh" line.
func scorePeerLine(line string, w *trace.Workload, resources []model.Resource, opts Options, accs map[string][]acc) error {
	f := strings.Split(line, ",")
	h := opts.Horizon
	bad := func(why string) error {
		return fmt.Errorf("backtest: %s: bad output line %.80q: %s", PeerRForecast, line, why)
	}
	if len(f) != 3+2*h {
		return bad("wrong number of fields")
	}
	var vi, ri int
	if _, err := fmt.Sscanf(f[0], "%d:%d", &vi, &ri); err != nil || vi < 0 || vi >= len(w.VMs) || ri < 0 || ri >= len(resources) {
		return bad("unknown series")
	}
	o, err := strconv.Atoi(f[1])
	x := series(&w.VMs[vi], resources[ri])
	if err != nil || o < opts.Warmup || o+h > len(x) || (o-opts.Warmup)%opts.Every != 0 {
		return bad("not a scored origin")
	}
	name, ok := rModel[f[2]]
	if !ok {
		return bad("unknown model")
	}
	a := &accs[name][ri]
	c := opts.Confidence
	for k := range h {
		p, err1 := strconv.ParseFloat(f[3+k], 64)
		u, err2 := strconv.ParseFloat(f[3+h+k], 64)
		if err1 != nil || err2 != nil || math.IsNaN(p) || math.IsNaN(u) {
			return bad("not a number")
		}
		y := float64(x[o+k])
		e := y - p
		a.abs += math.Abs(e)
		a.step[k] += math.Abs(e)
		a.sq += e * e
		if d := y - u; d >= 0 {
			a.pin += c * d
		} else {
			a.pin -= (1 - c) * d
		}
		if y <= u {
			a.cov++
		}
	}
	a.n += int64(h)
	return nil
}
