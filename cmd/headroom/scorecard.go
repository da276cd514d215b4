package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/sim"
	"github.com/headroom/headroom/internal/sim/cloudsimref"
	"github.com/headroom/headroom/internal/trace"
)

var cloudsimPolicies = []string{"thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2"}

func newScorecardCmd() *cobra.Command {
	var pol, randomRules string
	var hosts int
	cmd := &cobra.Command{
		Use:   "scorecard <planetlab-root>",
		Short: "Measure a policy against CloudSim's best on every PlanetLab day",
		Long: `scorecard runs the policy (default: headroom), the oracle and CloudSim's four
policies on every day folder under <planetlab-root>, and prints a Markdown table of the
ratios the proactive-migration issue sets: ESV against the best CloudSim policy of the
day (target <= 0.25), migrations and energy against LR-MMT (<= 0.2 and <= 1.1), and ESV
against the oracle. Where CloudSim 3.0.3's own figures exist for a day they are the
baseline; otherwise our simulation of CloudSim's policies is.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hosts < 0 {
				return fmt.Errorf("--hosts %d: want a positive number of hosts", hosts)
			}
			days, err := listDays(args[0])
			if err != nil {
				return err
			}
			p, err := core.ParsePolicy(pol)
			if err != nil {
				return fmt.Errorf("--policy: %w", err)
			}
			oracle, _ := core.ParsePolicy("oracle")
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "| day | energy kWh | migrations | ESV | best CloudSim ESV | ESV ratio (≤0.25) | migrations / LR (≤0.2) | energy / LR (≤1.1) | oracle ESV | ESV / oracle | rule breaches |")
			fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|")
			for _, day := range days {
				w, err := trace.Load("planetlab:" + filepath.Join(args[0], day))
				if err != nil {
					return err
				}
				cfg := sim.DefaultConfig()
				if hosts > 0 {
					cfg.Hosts = hosts
				}
				rs, err := loadRules("", randomRules, w, cfg.Hosts)
				if err != nil {
					return err
				}
				run := func(p core.Policy, withRules bool) (*sim.Result, error) {
					o := sim.Options{Config: &cfg, Progress: progress(day + " " + p.Name())}
					if withRules {
						o.Rules = rs
					}
					return sim.Run(w, p, o)
				}
				r, err := run(p, true)
				if err != nil {
					return err
				}
				o, err := run(oracle, true)
				if err != nil {
					return err
				}
				bestESV, bestName := 0.0, ""
				var lrE, lrM float64
				for _, n := range cloudsimPolicies {
					var esv, e, m float64
					if ref, ok := cloudsimref.Find(day, n); ok {
						esv, e, m = ref.ESV, ref.EnergyKWh, float64(ref.Migrations)
					} else {
						cp, _ := core.ParsePolicy(n)
						cr, err := run(cp, false)
						if err != nil {
							return err
						}
						esv, e, m = cr.ESV, cr.HostEnergyKWh, float64(cr.Migrations)
					}
					if bestName == "" || esv < bestESV {
						bestESV, bestName = esv, n
					}
					if n == "lr-mmt-1.2" {
						lrE, lrM = e, m
					}
				}
				mark := func(x, limit float64) string {
					if x <= limit {
						return fmt.Sprintf("%.3f ✓", x)
					}
					return fmt.Sprintf("%.3f ✗", x)
				}
				fmt.Fprintf(out, "| %s | %.2f | %d | %.5f | %.5f (%s) | %s | %s | %s | %.5f | %.2f | %d |\n",
					day, r.HostEnergyKWh, r.Migrations, r.ESV, bestESV, bestName,
					mark(r.ESV/bestESV, 0.25), mark(float64(r.Migrations)/lrM, 0.2), mark(r.HostEnergyKWh/lrE, 1.1),
					o.ESV, r.ESV/o.ESV, r.RuleViolations)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pol, "policy", "headroom", "policy to score")
	cmd.Flags().IntVar(&hosts, "hosts", 0, "hosts in each run (default: the simulator's 800)")
	cmd.Flags().StringVar(&randomRules, "random-rules", "", "attach generated must rules to the policy's runs (see simulate --random-rules)")
	return cmd
}
