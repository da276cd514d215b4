package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/backtest"
	"github.com/headroom/headroom/internal/forecast"
	"github.com/headroom/headroom/internal/report"
	"github.com/headroom/headroom/internal/trace"
)

func init() { extraCommands = append(extraCommands, newBacktestCmd) }

func newBacktestCmd() *cobra.Command {
	var (
		workload, reportDir, models string
		horizon                     time.Duration
		confidence                  float64
		asJSON, refs                bool
		peer                        string
		every, everyVM, rProcs      int
		rWindow                     int
		rResults                    string
	)
	c := &cobra.Command{
		Use:   "backtest",
		Short: "Walk forecasting models forward through traces and score them",
		Long: "Walks every model forward through the workload's traces without looking ahead and scores\n" +
			"MAE, RMSE, the pinball loss and the coverage of the upper bound over every horizon step.\n" +
			"The engine's own choice is the model named default; last and mean12 are the baselines.\n" +
			"Models: " + strings.Join(forecast.Names(), ", "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !(confidence > 0 && confidence < 1) {
				return fmt.Errorf("--confidence %v: want a number between 0 and 1", confidence)
			}
			var names []string
			list := strings.Split(models, ",")
			if strings.TrimSpace(models) == "all" {
				list = forecast.Names()
			}
			for _, m := range list {
				if m = strings.TrimSpace(m); m == "" {
					continue
				}
				if _, err := forecast.Lookup(m); err != nil {
					return fmt.Errorf("--models: %w", err)
				}
				names = append(names, m)
			}
			w, err := trace.Load(workload)
			if err != nil {
				return fmt.Errorf("--workload %q: %w", workload, err)
			}
			if horizon <= 0 {
				return fmt.Errorf("--horizon %v: want a positive duration", horizon)
			}
			steps := horizon.Seconds() / w.Step
			if steps < 1 || math.Abs(steps-math.Round(steps)) > 1e-9 {
				return fmt.Errorf("--horizon %v: want a positive multiple of the workload's %gs step", horizon, w.Step)
			}
			if every < 1 {
				return fmt.Errorf("--every %d: want at least 1", every)
			}
			if everyVM < 1 {
				return fmt.Errorf("--every-vm %d: want at least 1", everyVM)
			}
			if peer != "" {
				if _, ok := backtest.Peers[peer]; !ok {
					return fmt.Errorf("--peer %q: the only peer is %s", peer, backtest.PeerRForecast)
				}
				// Say so before the long part, not after it.
				if err := backtest.CheckR(cmd.Context(), ""); err != nil {
					return fmt.Errorf("--peer %s: %w", peer, err)
				}
			}
			opts := backtest.Options{Horizon: int(math.Round(steps)), Confidence: confidence, Models: names, Every: every, EveryVM: everyVM}
			if !asJSON {
				opts.Progress = progress("backtest: VMs")
			}
			res, err := backtest.Run(w, opts)
			if err != nil {
				return err
			}
			if peer != "" {
				po := backtest.PeerOptions{Procs: rProcs, Window: rWindow, Results: rResults}
				if !asJSON {
					po.Progress = progress("backtest: " + peer + " series")
				}
				start := time.Now()
				sc, err := backtest.RunPeer(cmd.Context(), w, opts, peer, po)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "backtest: %s took %s on %d R processes\n", peer, time.Since(start).Round(time.Second), rProcs)
				res.Models = append(res.Models, sc...)
			}
			if refs {
				if !asJSON {
					opts.Progress = progress("backtest: references")
				}
				if res.References, err = backtest.RunReferences(w, opts); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				fmt.Fprint(out, res.Text())
			}
			if reportDir != "" {
				path, err := report.Write(reportDir, res.Page())
				if err != nil {
					return fmt.Errorf("--report %q: %w", reportDir, err)
				}
				fmt.Fprintln(os.Stderr, "report:", path)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&workload, "workload", "", "trace to run on: "+trace.Specs)
	f.DurationVar(&horizon, "horizon", 30*time.Minute, "how far ahead to forecast; a multiple of the trace step")
	f.Float64Var(&confidence, "confidence", 0.9, "confidence of the upper bound")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	f.StringVar(&reportDir, "report", "", "write an HTML report with plots into this directory")
	f.BoolVar(&refs, "references", false, "also score estimators that look ahead or choose with hindsight: how far below mean12 any forecaster could get")
	f.StringVar(&peer, "peer", "", "also score an external forecaster on the same series, origins and steps: "+backtest.PeerRForecast+" (R's ses, ets, thetaf and auto.arima; needs Rscript and r-cran-forecast)")
	f.IntVar(&every, "every", 1, "score only every Nth origin from the warm-up on, every row on the same subset (R is slow: minutes per thousand origins)")
	f.IntVar(&everyVM, "every-vm", 1, "score only every Nth VM, every row on the same subset")
	f.IntVar(&rWindow, "r-window", 0, "with --peer, the most samples before an origin that R fits on (default: the engine's history, a week)")
	f.StringVar(&rResults, "r-results", "", "with --peer, keep R's raw forecasts in this file and reuse them when it was made for the same series, origins and confidence (R is slow)")
	f.IntVar(&rProcs, "r-procs", runtime.GOMAXPROCS(0), "R processes to run at once with --peer")
	f.StringVar(&models, "models", "", "comma-separated models to run besides default, last and mean12 (all: \"all\")")
	return c
}
