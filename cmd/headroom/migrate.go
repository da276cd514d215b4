package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/transfer"
)

func init() { extraCommands = append(extraCommands, newMigrateCmd) }

// migrateFlags are "headroom migrate"'s options.
type migrateFlags struct {
	to, config, netns string
	explain, dryRun   bool
	asJSON            bool
	capMiBps          float64
	linkMiBps         float64
	dirtyMiBps        float64
	workingSetMiB     float64
	dirtyMaxMiBps     float64
	samples           int
	timeout           time.Duration
}

// migrateReport is what "headroom migrate --json" prints.
type migrateReport struct {
	VM          string                     `json:"vm"`
	Source      string                     `json:"source"`
	Target      string                     `json:"target"`
	Input       transfer.Input             `json:"input"`
	DirtySample []float64                  `json:"dirty_samples_mibps,omitempty"`
	Options     model.StateTransferOptions `json:"options"`
	Explanation *transfer.Explanation      `json:"explanation,omitempty"`
	Measured    *transfer.Measured         `json:"measured,omitempty"`
	// JobSeconds is libvirt's job clock; Measured.Seconds is the wall time from
	// the Migrate call to the verified end, the clock predictions are made for.
	JobSeconds float64 `json:"job_seconds,omitempty"`
	Iterations int     `json:"iterations,omitempty"`
	Throttle   int     `json:"max_throttle_pct,omitempty"`
	Phase      string  `json:"phase,omitempty"`
	Error      string  `json:"error,omitempty"`
}

func newMigrateCmd() *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "migrate <vm> --to <host> --config <controller.yaml>",
		Short: "Live-migrate one VM with the options the transfer model chooses",
		Long: `migrate measures the VM's memory dirty rate (QEMU's dirty-rate calculation, a few
one-second samples), predicts every candidate set of options with the transfer model,
prints the chosen one (--explain: every candidate and why it won or lost), then
migrates and prints the measured time, data and downtime beside the prediction.

Hosts, their migrate URIs and labels, the downtime limit and whether post-copy is
allowed come from the controller config. Times are wall-clock from the migrate call
to the VM verified on the target; the job clock libvirt keeps is shown beside it.
For a lab made by 'headroom lab up', pass --netns <name>-lab.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("want exactly one VM name, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f.dirtyMiBps = -1
			if cmd.Flags().Changed("dirty-rate") {
				f.dirtyMiBps, _ = cmd.Flags().GetFloat64("dirty-rate")
				if f.dirtyMiBps < 0 {
					return fmt.Errorf("--dirty-rate: %v must be >= 0", f.dirtyMiBps)
				}
			}
			return runMigrate(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.to, "to", "", "target host (an id from --config)")
	fl.StringVar(&f.config, "config", "", "controller configuration (YAML)")
	fl.BoolVar(&f.explain, "explain", false, "print every candidate the chooser weighed and why")
	fl.BoolVar(&f.dryRun, "dry-run", false, "predict and choose, do not migrate")
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON object instead of text")
	fl.Float64Var(&f.capMiBps, "bandwidth-cap", 0, "cap the migration at this many MiB/s (0: none)")
	fl.Float64Var(&f.linkMiBps, "link", 0, "link bandwidth between the hosts in MiB/s (default: the model's prior, 1100)")
	fl.Float64("dirty-rate", 0, "use this dirty rate (MiB/s) instead of measuring it")
	fl.Float64Var(&f.workingSetMiB, "working-set", 0, "MiB the guest rewrites, if known (bounds each pass's dirty set)")
	fl.Float64Var(&f.dirtyMaxMiBps, "dirty-max", 0, "MiB/s the guest would dirty with its vCPUs to itself, if known (how far auto-converge must throttle)")
	fl.IntVar(&f.samples, "samples", 3, "dirty-rate samples, one a second")
	fl.StringVar(&f.netns, "netns", "", "dial the hosts from this network namespace (a lab's <name>-lab)")
	fl.DurationVar(&f.timeout, "timeout", 0, "abort the migration after this long (default: the config's migration_timeout)")
	cmd.MarkFlagRequired("to")
	cmd.MarkFlagRequired("config")
	return cmd
}

func (f migrateFlags) check() error {
	switch {
	case f.capMiBps < 0 || math.IsNaN(f.capMiBps) || math.IsInf(f.capMiBps, 0):
		return fmt.Errorf("--bandwidth-cap: %v must be a rate >= 0", f.capMiBps)
	case f.linkMiBps < 0 || math.IsNaN(f.linkMiBps) || math.IsInf(f.linkMiBps, 0):
		return fmt.Errorf("--link: %v must be a rate >= 0", f.linkMiBps)
	case f.workingSetMiB < 0 || math.IsNaN(f.workingSetMiB):
		return fmt.Errorf("--working-set: %v must be >= 0", f.workingSetMiB)
	case f.dirtyMaxMiBps < 0 || math.IsNaN(f.dirtyMaxMiBps):
		return fmt.Errorf("--dirty-max: %v must be >= 0", f.dirtyMaxMiBps)
	case f.samples < 1 || f.samples > 60:
		return fmt.Errorf("--samples: %d not in 1..60", f.samples)
	case f.timeout < 0:
		return fmt.Errorf("--timeout: %v must be positive", f.timeout)
	}
	return nil
}

func runMigrate(cmd *cobra.Command, vm string, f migrateFlags) error {
	if err := f.check(); err != nil {
		return err
	}
	cfg, err := controller.Load(f.config)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var ids []string
	byID := map[string]controller.HostConfig{}
	var hosts []libvirt.HostConfig
	for _, h := range cfg.Hosts {
		ids = append(ids, h.ID)
		byID[h.ID] = h
		hosts = append(hosts, libvirt.HostConfig{ID: h.ID, URI: h.URI, MigrateURI: h.MigrateURI})
	}
	dst, ok := byID[f.to]
	if !ok {
		return fmt.Errorf("--to: host %q is not in %s (hosts: %s)", f.to, f.config, strings.Join(ids, ", "))
	}
	dcfg := libvirt.Config{Hosts: hosts}
	if f.netns != "" {
		ns := f.netns
		dcfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialInNetns(ctx, ns, network, addr)
		}
	}
	drv, err := libvirt.New(dcfg)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer drv.Close()

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()

	loc, err := drv.Locate(ctx, vm)
	switch {
	case errors.Is(err, hypervisor.ErrVMNotFound) || (err == nil && loc.Host == ""):
		return fmt.Errorf("vm %q: not running on any host in %s", vm, f.config)
	case loc.Host == "":
		return fmt.Errorf("vm %q: %w", vm, err)
	case loc.Host == f.to:
		return fmt.Errorf("vm %q already runs on %s (--to)", vm, f.to)
	}
	src := byID[loc.Host]
	vms, err := drv.VMs(ctx)
	var memMiB float64
	for _, v := range vms {
		if v.ID == vm && v.Host == loc.Host {
			memMiB = v.MemMiB
		}
	}
	if memMiB == 0 {
		return fmt.Errorf("vm %q: no size from %s: %v", vm, loc.Host, err)
	}

	rep := migrateReport{VM: vm, Source: loc.Host, Target: f.to}
	in := transfer.Input{VM: vm, MemMiB: memMiB, WorkingSetMiB: f.workingSetMiB, DirtyMaxMiBps: f.dirtyMaxMiBps,
		Link:         transfer.Link{MiBps: f.linkMiBps},
		SourceLabels: src.Labels, TargetLabels: dst.Labels,
		Policy: transfer.Policy{MaxDowntimeMs: float64(cfg.MaxDowntime.Milliseconds()), PostCopy: cfg.AllowPostCopy,
			MaxBandwidthMiBps: f.capMiBps}}
	if f.dirtyMiBps >= 0 {
		in.DirtyMiBps, in.DirtyUpperMiBps = f.dirtyMiBps, f.dirtyMiBps
	} else {
		rep.DirtySample, err = sampleDirty(ctx, drv, vm, f.samples)
		if err != nil {
			return err
		}
		in.DirtyMiBps, in.DirtyUpperMiBps = meanMax(rep.DirtySample)
	}
	opts, ex := transfer.NewChooser(transfer.DefaultModel()).Choose(in)
	if dst.MigrateURI != "" {
		opts.MigrateURI = dst.MigrateURI // the config wins, as in the controller
	}
	rep.Input, rep.Options = in, opts
	if f.explain {
		rep.Explanation = &ex
	}
	if !f.asJSON {
		printChoice(out, rep, ex, f.explain)
	}
	if f.dryRun {
		if f.asJSON {
			return writeJSON(out, rep)
		}
		return nil
	}

	timeout := f.timeout
	if timeout == 0 {
		timeout = cfg.MigrationTimeout
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	m, err := drv.Migrate(mctx, vm, f.to, opts)
	if err != nil {
		return fmt.Errorf("migrate %s to %s: %w", vm, f.to, err)
	}
	show := isTerminal(os.Stderr) && !f.asJSON
	maxThrottle := 0
	aborting := false
	updates := m.Updates()
	for updates != nil {
		select {
		case p, ok := <-updates:
			if !ok {
				updates = nil
				break
			}
			maxThrottle = max(maxThrottle, p.Throttle)
			if show {
				fmt.Fprintf(errw, "\r\033[K%-9s %5.1f%% of RAM sent  pass %d  throttle %d%%  job %.1f s",
					p.Phase, 100*p.Fraction(), p.Iteration, p.Throttle, p.Elapsed.Seconds())
			}
		case <-ctx.Done():
			if !aborting {
				aborting = true
				fmt.Fprintf(errw, "\nheadroom: interrupted, aborting the migration of %s\n", vm)
				actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := m.Abort(actx); err != nil {
					fmt.Fprintf(errw, "headroom: abort: %v\n", err)
				}
				acancel()
			}
			ctx = context.Background() // wait for the end
		case <-mctx.Done():
			if !aborting {
				aborting = true
				fmt.Fprintf(errw, "\nheadroom: %s still migrating after --timeout %v, aborting\n", vm, timeout)
				actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
				m.Abort(actx)
				acancel()
			}
			mctx = context.Background()
		}
	}
	if show {
		fmt.Fprint(errw, "\r\033[K")
	}
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	res, merr := m.Wait(wctx)
	meas := transfer.MeasuredFrom(res)
	rep.Measured = &meas
	rep.JobSeconds = res.Elapsed.Seconds()
	rep.Iterations = res.Iteration
	rep.Throttle = max(maxThrottle, res.Throttle)
	rep.Phase = string(res.Phase)
	if merr != nil {
		rep.Error = merr.Error()
	}
	if f.asJSON {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else {
		printOutcome(out, rep, ex.Candidates[ex.Chosen].Mean, res)
	}
	if merr != nil {
		return fmt.Errorf("migrate %s to %s: %w", vm, f.to, merr)
	}
	return nil
}

// sampleDirty reads n dirty-rate samples of vm. The driver starts a calculation
// at each Stats call and reports it at the next, so the first call only starts.
func sampleDirty(ctx context.Context, d hypervisor.Driver, vm string, n int) ([]float64, error) {
	var out []float64
	for i := 0; i <= n; i++ {
		st, err := d.Stats(ctx)
		var found bool
		for _, s := range st.VMs {
			if s.VM == vm {
				found = true
				if i > 0 {
					out = append(out, s.DirtyMiBps)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("vm %q: no stats: %v", vm, err)
		}
		if i == n {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(1200 * time.Millisecond): // the 1 s calculation and slack
		}
	}
	return out, nil
}

func meanMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs)), slices.Max(xs)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printChoice(w io.Writer, r migrateReport, ex transfer.Explanation, explain bool) {
	in, o := r.Input, r.Options
	fmt.Fprintf(w, "%s: %s -> %s, %.0f MiB, dirty %.1f MiB/s", r.VM, r.Source, r.Target, in.MemMiB, in.DirtyMiBps)
	if len(r.DirtySample) > 0 {
		fmt.Fprintf(w, " (mean of %d samples, max %.1f)", len(r.DirtySample), in.DirtyUpperMiBps)
	}
	fmt.Fprintf(w, ", link %.0f MiB/s", ex.LinkMiBps)
	if ex.CapMiBps > 0 {
		fmt.Fprintf(w, ", cap %.0f MiB/s", ex.CapMiBps)
	}
	fmt.Fprintln(w)
	c := ex.Candidates[ex.Chosen]
	fmt.Fprintf(w, "chosen: %s; downtime limit %.0f ms", c.Name, o.MaxDowntimeMs)
	if o.MigrateURI != "" {
		fmt.Fprintf(w, ", to %s", o.MigrateURI)
	}
	fmt.Fprintf(w, "\npredicted: %.1f s, %.0f MiB, %.0f ms downtime, passes: %d", o.PredictedSeconds,
		o.PredictedDataMiB, o.PredictedDowntime, c.Mean.Rounds)
	if c.Mean.FinalThrottle > 0 {
		fmt.Fprintf(w, ", throttle up to %.0f%%", 100*c.Mean.FinalThrottle)
	}
	fmt.Fprintln(w)
	if explain {
		fmt.Fprintf(w, "\n%s\n", ex)
	}
}

func printOutcome(w io.Writer, r migrateReport, p transfer.Prediction, res hypervisor.Result) {
	m := r.Measured
	fmt.Fprintf(w, "\n%-10s %12s %12s\n", "", "predicted", "measured")
	fmt.Fprintf(w, "%-10s %10.1f s %10.1f s   (libvirt job clock %.1f s)\n", "time", p.Seconds, m.Seconds, r.JobSeconds)
	fmt.Fprintf(w, "%-10s %8.0f MiB %8.0f MiB\n", "data", p.WireMiB, m.DataMiB)
	fmt.Fprintf(w, "%-10s %9.0f ms %9.0f ms\n", "downtime", p.DowntimeMs, m.DowntimeMs)
	fmt.Fprintf(w, "%-10s %12d %12d\n", "passes", p.Rounds, r.Iterations)
	fmt.Fprintf(w, "%-10s %11.0f%% %11d%%\n", "throttle", 100*p.FinalThrottle, r.Throttle)
	switch {
	case r.Error != "":
		fmt.Fprintf(w, "result: %s: %s\n", res.Phase, r.Error)
	default:
		fmt.Fprintf(w, "result: %s; %s runs on %s\n", res.Phase, r.VM, res.Where.Host)
	}
}
