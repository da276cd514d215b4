// Command headroom predicts VM demand and live-migrates VMs before a host runs out of
// room; it also simulates and backtests its policies on real traces.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "headroom:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "headroom",
		Short:         "Move VMs before their host runs out of resources",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newSimulateCmd(), newFidelityCmd(), newScorecardCmd(), newPlanCmd(), newRunCmd(), newDrainCmd(), newEventsCmd(), newApproveCmd())
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are registered by the files that define them.
var extraCommands []func() *cobra.Command

// isTerminal reports whether f is a character device (a terminal), where progress
// output belongs.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress prints "label done/total" on one line of stderr when it is a terminal.
func progress(label string) func(done, total int) {
	if !isTerminal(os.Stderr) {
		return nil
	}
	return func(done, total int) {
		fmt.Fprintf(os.Stderr, "\r%s %d/%d", label, done, total)
		if done == total {
			fmt.Fprint(os.Stderr, "\r\033[K")
		}
	}
}
