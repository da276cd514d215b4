package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/snapfile"
)

func newPlanCmd() *cobra.Command {
	var snapPath, pol string
	var explain, asJSON bool
	cmd := &cobra.Command{
		Use:   "plan --snapshot <file.json>",
		Short: "Run one decision on a snapshot file and print the plan",
		Long: `plan runs Decide once on a cluster snapshot (hosts, VMs, their forecasts and rules;
see examples/snapshot.json) and prints the migrations it would start, each with its
reason. --explain also shows each host's overload assessment with its binding
resource (the one whose breach comes first) and, for every VM the plan moves or
cannot place, each candidate host with the filter that rejected it or its scores,
and the resource that bound it (rejected on, or least room left).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if snapPath == "" {
				return fmt.Errorf("--snapshot: required")
			}
			snap, fc, err := snapfile.Load(snapPath)
			if err != nil {
				return fmt.Errorf("--snapshot: %w", err)
			}
			p, err := core.ParsePolicy(pol)
			if err != nil {
				return fmt.Errorf("--policy: %w", err)
			}
			in := core.Input{Snapshot: snap, Forecasts: fc}
			var ex core.Explained
			if h, ok := p.(*core.Headroom); ok && explain {
				ex = h.Explain(in)
			} else {
				ex.Plan = core.Decide(snap, fc, p, nil)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			printPlan(out, snap, ex, explain)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&snapPath, "snapshot", "", "snapshot file (JSON)")
	f.StringVar(&pol, "policy", "headroom", "policy ("+core.PolicyNames+")")
	f.BoolVar(&explain, "explain", false, "show every candidate host's filter verdict or scores")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printPlan(w io.Writer, snap *model.Snapshot, ex core.Explained, explain bool) {
	if explain && len(ex.Risks) > 0 {
		fmt.Fprintln(w, "Hosts at risk:")
		for _, r := range ex.Risks {
			act := "wait"
			if r.Acted {
				act = "act"
			}
			fmt.Fprintf(w, "  %s: %s -> %s (binding: %s)\n", r.Host, r.Why, act, r.Resource)
		}
		fmt.Fprintln(w)
	}
	if len(ex.Moves) == 0 {
		fmt.Fprintln(w, "No migrations.")
	}
	for _, m := range ex.Moves {
		fmt.Fprintf(w, "migrate %s from %s to %s (priority %d, %s)\n  %s\n",
			m.VMInstanceID, snap.Hosts[snap.VMs[m.VM].Host].ID, m.TargetHostID, m.Priority, m.Reason.Rule, m.Reason.Detail)
	}
	for _, u := range ex.Unplaced {
		fmt.Fprintf(w, "cannot move %s: %s\n", snap.VMs[u.VM].ID, u.Reason)
	}
	if !explain {
		return
	}
	ids := make([]string, 0, len(ex.Candidates))
	for id := range ex.Candidates {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(w, "\nCandidates for %s:\n", id)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  host\tverdict\tscores\ttotal")
		for _, c := range ex.Candidates[id] {
			if c.Rejected != "" {
				bind := ""
				if c.Binding != "" {
					bind = " [binding " + c.Binding + "]"
				}
				fmt.Fprintf(tw, "  %s\trejected by %s: %s%s\t\t\n", c.HostID, c.Rejected, c.Reason, bind)
				continue
			}
			var parts []string
			for k, v := range c.Scores {
				parts = append(parts, fmt.Sprintf("%s=%.3f", k, v))
			}
			sort.Strings(parts)
			fmt.Fprintf(tw, "  %s\tfeasible [binding %s]\t%s\t%.3f\n", c.HostID, c.Binding, strings.Join(parts, " "), c.Total)
		}
		tw.Flush()
	}
}
