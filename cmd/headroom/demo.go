package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/demo"
	"github.com/headroom/headroom/internal/server"
)

func init() { extraCommands = append(extraCommands, newDemoCmd) }

func newDemoCmd() *cobra.Command {
	var listen, mode string
	var speed float64
	cmd := &cobra.Command{
		Use:   "demo [--listen 127.0.0.1:9470] [--speed 150] [--mode auto]",
		Short: "Run the live controller on an in-memory cluster replaying the PlanetLab day",
		Long: `demo runs the same controller, dashboard, API and /metrics as run, against an
in-memory cluster of 6 hosts whose 30 VMs replay the embedded PlanetLab day at
--speed times real time. It prints the dashboard's URL and, on a line of its own,
"token: <token>", an admin token made for this run: open <URL>/?token=<token> to
log a browser in. Nothing is kept after it stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := demo.New(demo.Options{Speed: speed, Mode: controller.Mode(mode)})
			if err != nil {
				return err
			}
			defer d.Close()
			cfg := d.Config
			cfg.Listen = listen
			secret := server.NewSecret()
			tokens := server.NewTokens()
			tokens.Add("demo-admin", server.Admin, secret, time.Time{})
			srv, err := serveAPI(d.Controller, d.Log, cfg, tokens, os.Stderr)
			if err != nil {
				return err
			}
			defer srv.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "headroom demo: %d hosts, %d VMs, %s mode, one PlanetLab step every %v\n", len(cfg.Hosts), countVMs(d), cfg.Mode, cfg.Interval)
			fmt.Fprintf(out, "dashboard: %s/?token=%s\n", srv.URL, secret)
			fmt.Fprintf(out, "url: %s\n", srv.URL)
			fmt.Fprintf(out, "token: %s\n", secret)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return d.Run(ctx, srv.Observer.Wrap(nil))
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9470", "address of the dashboard, API and /metrics")
	cmd.Flags().Float64Var(&speed, "speed", 150, "trace seconds per second (the day's 5-minute step every 300/speed s)")
	cmd.Flags().StringVar(&mode, "mode", "auto", "dry-run, approve or auto")
	return cmd
}

func countVMs(d *demo.Demo) int {
	vms, _ := d.Driver.VMs(context.Background())
	return len(vms)
}
