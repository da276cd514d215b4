package sim

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/trace"
)

// BenchmarkScale replays the embedded PlanetLab day resampled to each fleet size
// (trace.Scale, seed 1, as `headroom simulate --scale`), hosts scaled alike, and
// prints wall seconds, VMs, hosts and the process's peak RSS. Factors come from
// HEADROOM_SCALE (default "1,10"; 100 takes minutes) and policies from
// HEADROOM_SCALE_POLICIES (default "headroom,lr-mmt-1.2", simulate's default run).
// A sub-benchmark "side-by-side" then runs all the policies at once with RunAll,
// as `simulate` without --policy does.
// Peak RSS is the process's high-water mark so far, so it is the figure of the
// largest run only when each factor runs in a process of its own (-bench with one
// factor, or see the README (Fleet-scale benchmarks) for the commands).
//
//	HEADROOM_SCALE=10 go test ./internal/sim/ -run '^$' -bench Scale -benchtime 1x
func BenchmarkScale(b *testing.B) {
	factors := []int{1, 10}
	if s := os.Getenv("HEADROOM_SCALE"); s != "" {
		factors = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("HEADROOM_SCALE: %q is not a factor >= 1", f)
			}
			factors = append(factors, n)
		}
	}
	policies := []string{"headroom", "lr-mmt-1.2"}
	if s := os.Getenv("HEADROOM_SCALE_POLICIES"); s != "" {
		policies = strings.Split(s, ",")
	}
	day, err := trace.Load("")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range factors {
		w, err := trace.Scale(day, n, 1)
		if err != nil {
			b.Fatal(err)
		}
		if len(policies) > 1 {
			b.Run(fmt.Sprintf("%dx/side-by-side", n), func(b *testing.B) {
				var pols []core.Policy
				for _, name := range policies {
					pol, err := core.ParsePolicy(name)
					if err != nil {
						b.Fatal(err)
					}
					pols = append(pols, pol)
				}
				cfg := ConfigFor(w)
				cfg.Hosts *= n
				var rs []*Result
				for b.Loop() {
					if rs, err = RunAll(w, pols, func(core.Policy) Options { return Options{Config: &cfg} }); err != nil {
						b.Fatal(err)
					}
				}
				var ru syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				b.ReportMetric(float64(ru.Maxrss)/(1<<20), "peak-rss-GiB")
				for _, r := range rs {
					fmt.Printf("scale %dx side by side %s: wall %.1f s, energy %.2f kWh, %d migrations\n", n, r.Policy, r.WallSeconds, r.EnergyKWh, r.Migrations)
				}
			})
		}
		for _, name := range policies {
			b.Run(fmt.Sprintf("%dx/%s", n, name), func(b *testing.B) {
				pol, err := core.ParsePolicy(name)
				if err != nil {
					b.Fatal(err)
				}
				cfg := ConfigFor(w)
				cfg.Hosts *= n
				var r *Result
				for b.Loop() {
					if r, err = Run(w, pol, Options{Config: &cfg}); err != nil {
						b.Fatal(err)
					}
				}
				var ru syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				b.ReportMetric(r.WallSeconds, "wall-s")
				b.ReportMetric(float64(r.VMs), "vms")
				b.ReportMetric(float64(r.Hosts), "hosts")
				b.ReportMetric(float64(ru.Maxrss)/(1<<20), "peak-rss-GiB")
				fmt.Printf("scale %dx %s: %d VMs on %d hosts, wall %.1f s, peak RSS %.2f GiB, energy %.2f kWh, %d migrations\n",
					n, name, r.VMs, r.Hosts, r.WallSeconds, float64(ru.Maxrss)/(1<<20), r.EnergyKWh, r.Migrations)
			})
		}
	}
}
