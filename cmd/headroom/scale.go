package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/headroom/headroom/internal/sim"
	"github.com/headroom/headroom/internal/trace"
)

// addScaleFlags adds simulate's --scale and --scale-seed.
func addScaleFlags(f *pflag.FlagSet) {
	f.Int("scale", 1, "resample the workload's VMs into a fleet this many times larger, hosts too (see trace.Scale)")
	f.Uint64("scale-seed", 1, "seed of --scale's resampling")
}

// scaleFleet applies --scale to the workload and the host count.
func scaleFleet(cmd *cobra.Command, w *trace.Workload, cfg *sim.Config) (*trace.Workload, error) {
	n, _ := cmd.Flags().GetInt("scale")
	seed, _ := cmd.Flags().GetUint64("scale-seed")
	if n == 1 {
		return w, nil
	}
	s, err := trace.Scale(w, n, seed)
	if err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	cfg.Hosts *= n
	fmt.Fprintf(os.Stderr, "scaled %dx: %d VMs on %d hosts\n", n, len(s.VMs), cfg.Hosts)
	return s, nil
}

// startCPUProfile starts a CPU profile into path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
