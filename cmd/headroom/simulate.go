package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/rules"
	"github.com/headroom/headroom/internal/sim"
	"github.com/headroom/headroom/internal/trace"
)

// defaultRun is what simulate runs when given neither --policy nor --compare:
// headroom's own policy beside CloudSim's classic LR-MMT baseline.
var defaultRun = []string{"headroom", "lr-mmt-1.2"}

func newSimulateCmd() *cobra.Command {
	var (
		workload, pol, compare, reportDir string
		rulesFile, randomRules            string
		cpuProfile                        string
		asJSON                            bool
		hosts                             int
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Replay a trace through a policy on a modelled cluster",
		Long: `simulate replays per-VM traces through a decision policy on a modelled data centre
(CloudSim's PlanetLab experiment: 800 hosts, HP G4/G5, 300 s decisions; for a
Bitbrains trace, the multi-resource scenario whose hosts have, in each resource, the
largest 99th-percentile demand of any one VM, with each VM's demand clipped there) and prints energy (hosts, plus each live migration's measured 0.512 J per MB copied + 20.2 J), migrations, the SLA metrics
SLATAH, PDM, SLAV and ESV, and contention per resource (by_resource in --json).

Policies: ` + core.PolicyNames + `.
--workload with no value, or no --workload, uses the embedded PlanetLab day 20110303.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			names := []string{pol}
			switch {
			case compare != "" && pol != "":
				return fmt.Errorf("--policy and --compare: give one, not both")
			case compare != "":
				names = splitList(compare)
			case pol == "":
				names = defaultRun
			}
			pols := make([]core.Policy, len(names))
			for i, n := range names {
				p, err := core.ParsePolicy(n)
				if err != nil {
					return fmt.Errorf("--policy: %w", err)
				}
				pols[i] = p
			}
			w, err := trace.Load(workload)
			if err != nil {
				return fmt.Errorf("--workload: %w", err)
			}
			// Bitbrains runs its own scenario (sim.BitbrainsConfig), whose host count
			// --hosts overrides only when given.
			cfg := sim.ConfigFor(w)
			if !cfg.MultiResource || cmd.Flags().Changed("hosts") {
				cfg.Hosts = hosts
			}
			if w, err = scaleFleet(cmd, w, &cfg); err != nil { // scale.go
				return err
			}
			rs, err := loadRules(rulesFile, randomRules, w, cfg.Hosts)
			if err != nil {
				return err
			}
			results, err := sim.RunAll(w, pols, func(p core.Policy) sim.Options {
				return sim.Options{Config: &cfg, Progress: progress(p.Name()), Rules: rs}
			})
			if err != nil {
				return err
			}
			if reportDir != "" {
				path, err := writeSimReport(reportDir, w, results)
				if err != nil {
					return fmt.Errorf("--report: %w", err)
				}
				fmt.Fprintln(os.Stderr, "report written to", path)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, results)
			}
			printTable(out, results)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&workload, "workload", "", "trace to replay: planetlab:<dir>, bitbrains:<dir>, csv:<file>; empty for the embedded sample")
	f.Lookup("workload").NoOptDefVal = ""
	f.StringVar(&pol, "policy", "", "decision policy ("+core.PolicyNames+"); without it and --compare, headroom beside lr-mmt-1.2")
	f.StringVar(&compare, "compare", "", "comma-separated policies to run side by side on the same trace")
	f.StringVar(&reportDir, "report", "", "write an HTML report with plots into this folder")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.StringVar(&rulesFile, "rules", "", "YAML file of VM-VM and VM-host rules to attach to the run")
	f.StringVar(&randomRules, "random-rules", "", "generate must rules: anti=<share of VMs in anti-affinity pairs>,host=<share pinned to half the hosts>,seed=<n>")
	f.IntVar(&hosts, "hosts", 800, "number of hosts in the modelled cluster")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to this file (go tool pprof)")
	addScaleFlags(f)
	return cmd
}

// loadRules reads a rules file or generates rules from a spec like
// "anti=0.1,host=0.05,seed=1".
func loadRules(file, spec string, w *trace.Workload, hosts int) ([]model.Rule, error) {
	if file != "" && spec != "" {
		return nil, fmt.Errorf("--rules and --random-rules: give one, not both")
	}
	if file != "" {
		rs, err := rules.Load(file)
		if err != nil {
			return nil, fmt.Errorf("--rules: %w", err)
		}
		return rs, nil
	}
	if spec == "" {
		return nil, nil
	}
	sp, err := rules.ParseSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("--random-rules: %w", err)
	}
	vms := make([]string, len(w.VMs))
	for i := range w.VMs {
		vms[i] = w.VMs[i].ID
	}
	hs := make([]string, hosts)
	for i := range hs {
		hs[i] = fmt.Sprintf("host-%d", i)
	}
	return rules.Generate(vms, hs, sp.Anti, sp.Host, sp.Seed), nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// printJSON prints one object for one run, and {"runs": [...]} for several.
func printJSON(w io.Writer, rs []*sim.Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(rs) == 1 {
		return enc.Encode(rs[0])
	}
	return enc.Encode(map[string]any{"runs": rs})
}

func printTable(w io.Writer, rs []*sim.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "policy\tworkload\thosts\tvms\tenergy kWh\thosts kWh\tmigration kWh\tmigrations\tSLATAH\tPDM\tSLAV\tESV\tno host\trule breaches\twall s\t\n")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%d\t%.4f\t%.5f\t%.3g\t%.3g\t%d\t%d\t%.2f\t\n",
			r.Policy, r.Workload, r.Hosts, r.VMs, r.EnergyKWh, r.HostEnergyKWh, r.MigrationEnergyKWh, r.Migrations, r.SLATAH, r.PDM, r.SLAV, r.ESV, r.Unplaced, r.RuleViolations, r.WallSeconds)
	}
	tw.Flush()
	printByResource(w, rs)
}

// printByResource prints each run's contention per resource.
func printByResource(w io.Writer, rs []*sim.Result) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "policy	")
	for _, r := range model.AllResources {
		fmt.Fprintf(tw, "%s slatah	%s unmet	", r, r)
	}
	fmt.Fprintln(tw)
	for _, x := range rs {
		fmt.Fprintf(tw, "%s	", x.Policy)
		for _, r := range model.AllResources {
			b := x.ByResource[r.String()]
			fmt.Fprintf(tw, "%.5f	%.2g	", b.SLATAH, b.Unmet)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
