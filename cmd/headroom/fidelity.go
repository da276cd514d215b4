package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/sim"
	"github.com/headroom/headroom/internal/sim/cloudsimref"
	"github.com/headroom/headroom/internal/trace"
)

func newFidelityCmd() *cobra.Command {
	var policies string
	cmd := &cobra.Command{
		Use:   "fidelity <planetlab-root>",
		Short: "Compare the simulator with CloudSim 3.0.3's figures on PlanetLab days",
		Long: `fidelity runs CloudSim's policies on every day folder under <planetlab-root>
(e.g. planetlab/20110303) and prints a Markdown table of our figures beside
CloudSim 3.0.3's, with the deviation. Days CloudSim was not run on show ours alone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			days, err := listDays(args[0])
			if err != nil {
				return err
			}
			names := splitList(policies)
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "| day | policy | energy kWh (CloudSim) | Δ | migrations (CloudSim) | Δ | SLATAH (CloudSim) | Δ | ESV | wall s (CloudSim) |")
			fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|")
			for _, day := range days {
				w, err := trace.Load("planetlab:" + filepath.Join(args[0], day))
				if err != nil {
					return err
				}
				for _, n := range names {
					pol, err := core.ParsePolicy(n)
					if err != nil {
						return fmt.Errorf("--policies: %w", err)
					}
					r, err := sim.Run(w, pol, sim.Options{Progress: progress(day + " " + n)})
					if err != nil {
						return err
					}
					ref, ok := cloudsimref.Find(day, n)
					cell := func(got, want float64, f string) (string, string) {
						if !ok {
							return fmt.Sprintf(f, got), ""
						}
						d := ""
						if want != 0 {
							d = fmt.Sprintf("%+.1f%%", 100*(got/want-1))
						}
						return fmt.Sprintf(f+" ("+f+")", got, want), d
					}
					e, de := cell(r.HostEnergyKWh, ref.EnergyKWh, "%.2f") // CloudSim counts host power only
					m, dm := cell(float64(r.Migrations), float64(ref.Migrations), "%.0f")
					s, ds := cell(r.SLATAH, ref.SLATAH, "%.4f")
					wall := fmt.Sprintf("%.2f", r.WallSeconds)
					if ok {
						wall += fmt.Sprintf(" (%.1f)", ref.WallSec)
					}
					fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s | %.5f | %s |\n", day, n, e, de, m, dm, s, ds, r.ESV, wall)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policies, "policies", "thr-mmt-0.8,iqr-mmt-1.5,mad-mmt-2.5,lr-mmt-1.2,dvfs,oracle", "policies to run on each day")
	return cmd
}

// listDays returns the day folders under a PlanetLab root, sorted.
func listDays(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("planetlab root: %w", err)
	}
	var days []string
	for _, e := range ents {
		if e.IsDir() {
			days = append(days, e.Name())
		}
	}
	if len(days) == 0 {
		return nil, fmt.Errorf("planetlab root %s: no day folders", root)
	}
	sort.Strings(days)
	return days, nil
}
