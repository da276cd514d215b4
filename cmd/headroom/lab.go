package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/lab"
)

func init() { extraCommands = append(extraCommands, newLabCmd) }

// newLabCmd is "headroom lab": a cluster of libvirt hosts in network namespaces on
// this machine, for trying migrations for real.
func newLabCmd() *cobra.Command {
	var name, dir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run libvirt hosts in network namespaces on this machine (needs root)",
	}
	cmd.PersistentFlags().StringVar(&name, "name", "hr", "lab name: prefix of its namespaces")
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "state directory (default /var/lib/headroom-lab/<name>)")

	var hosts, vms, memMiB int
	var guestBin, kernel, args string
	up := &cobra.Command{
		Use:   "up",
		Short: "Make the hosts (removing an earlier lab of the same name) and start guests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Up(ctx, lab.Config{
				Name: name, Dir: dir, Hosts: hosts, Kernel: kernel, GuestBin: guestBin,
				Log: cmd.ErrOrStderr(),
			})
			if err != nil {
				return err
			}
			for i := range vms {
				vm := fmt.Sprintf("vm%d", i)
				if err := l.StartVM(ctx, i%len(l.Hosts), lab.VMSpec{Name: vm, MemoryMiB: memMiB, Args: args}); err != nil {
					return err
				}
			}
			for i := range vms {
				fmt.Fprintf(cmd.ErrOrStderr(), "lab %s: waiting for vm%d's first progress line\n", name, i)
				line, err := l.WaitProgress(ctx, i%len(l.Hosts), fmt.Sprintf("vm%d", i), 1, 90*time.Second)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "  vm%d: %s\n", i, line)
			}
			return printStatus(cmd, l)
		},
	}
	up.Flags().IntVar(&hosts, "hosts", 3, "number of hosts")
	up.Flags().IntVar(&vms, "vms", 1, "guests to start, spread round the hosts")
	up.Flags().IntVar(&memMiB, "mem", 128, "guest memory in MiB")
	up.Flags().StringVar(&args, "guest-args", "headroom.cpu=0.3,0.6 headroom.step=10s headroom.dirty_mib=32 headroom.dirty_rate=20",
		"guest trace options for the kernel command line")
	up.Flags().StringVar(&guestBin, "guest-bin", "", "prebuilt guest binary (default: go build ./guest from the source tree)")
	up.Flags().StringVar(&kernel, "kernel", "", "guest kernel (default: the one scripts/install-deps.sh unpacked)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab's guests, daemons, namespaces and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(cmd.Context(), name, dir, cmd.ErrOrStderr())
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the hosts, their URIs, guests and states",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := lab.Open(name, dir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return printStatus(cmd, l)
		},
	}

	steer := &cobra.Command{
		Use:   "steer HOST VM KEY=VALUE...",
		Short: "Change a running guest's trace, e.g. steer 0 vm0 cpu=0.9 dirty_rate=100",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, a []string) error {
			l, err := lab.Open(name, dir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var host int
			if _, err := fmt.Sscan(strings.TrimPrefix(a[0], "host"), &host); err != nil {
				return fmt.Errorf("host: %w", err)
			}
			r, err := l.Steer(cmd.Context(), host, a[1], strings.Join(a[2:], " "))
			fmt.Fprintln(cmd.OutOrStdout(), r)
			return err
		},
	}

	console := &cobra.Command{
		Use:   "console HOST VM",
		Short: "Print a guest's serial console as logged on a host",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			l, err := lab.Open(name, dir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var host int
			if _, err := fmt.Sscan(strings.TrimPrefix(a[0], "host"), &host); err != nil {
				return fmt.Errorf("host: %w", err)
			}
			s, err := l.Console(host, a[1])
			fmt.Fprint(cmd.OutOrStdout(), s)
			return err
		},
	}

	cmd.AddCommand(up, down, status, steer, console)
	return cmd
}

func printStatus(cmd *cobra.Command, l *lab.Lab) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
	defer cancel()
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tURI\tNETNS\tDOMAIN\tSTATE")
	var bad int
	for _, hs := range l.Status(ctx) {
		h := hs.Host
		if hs.Err != "" {
			bad++
			fmt.Fprintf(w, "%s\t%s\t%s\t-\tunreachable: %s\n", h.ID, hs.URI, h.NetNS, hs.Err)
			continue
		}
		if len(hs.Domains) == 0 {
			fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\n", h.ID, hs.URI, h.NetNS)
		}
		for _, d := range hs.Domains {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.ID, hs.URI, h.NetNS, d.Name, d.State)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d hosts unreachable", bad, len(l.Hosts))
	}
	return nil
}
