package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor/libvirt"
	"github.com/headroom/headroom/internal/store"
)

// openController loads the config and connects the libvirt driver and event log.
func openController(path, mode string) (*controller.Controller, *store.Log, controller.Config, func(), error) {
	cfg, err := controller.Load(path)
	if err != nil {
		return nil, nil, cfg, nil, fmt.Errorf("--config: %w", err)
	}
	if mode != "" {
		cfg.Mode = controller.Mode(mode)
		if err := cfg.Validate(); err != nil {
			return nil, nil, cfg, nil, fmt.Errorf("--mode: %w", err)
		}
	}
	var hosts []libvirt.HostConfig
	for _, h := range cfg.Hosts {
		hosts = append(hosts, libvirt.HostConfig{ID: h.ID, URI: h.URI, MigrateURI: h.MigrateURI, Capacity: h.Capacity, Cores: h.Cores})
	}
	lv, err := libvirt.New(libvirt.Config{Hosts: hosts})
	if err != nil {
		return nil, nil, cfg, nil, err
	}
	drv, err := withSource(cfg, lv) // source.go
	if err != nil {
		lv.Close()
		return nil, nil, cfg, nil, fmt.Errorf("--config: %w", err)
	}
	log, err := store.Open(cfg.EventLog)
	if err != nil {
		drv.Close()
		return nil, nil, cfg, nil, err
	}
	c, err := controller.New(cfg, drv, log)
	if err != nil {
		log.Close()
		drv.Close()
		return nil, nil, cfg, nil, err
	}
	return c, log, cfg, func() { log.Close(); drv.Close() }, nil
}

func newRunCmd() *cobra.Command {
	var cfgPath, mode string
	cmd := &cobra.Command{
		Use:   "run --config <file.yaml>",
		Short: "Run the live controller against libvirt hosts",
		Long: `run collects stats from every host each interval, feeds the prediction engine, runs
the same Decide as the simulator and carries out the plan through libvirt, within the
concurrency limits. Modes: dry-run (default: log only), approve (wait for
POST /api/approve/<vm> or 'headroom approve'), auto. Every decision, migration and
failure goes to the event log ('headroom events').`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, cfg, closeAll, err := openController(cfgPath, mode)
			if err != nil {
				return err
			}
			defer closeAll()
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(os.Stderr, "headroom: WARNING:", w)
			}
			stopHA, err := c.StartHA() // an ha: section makes this one of several replicas on etcd
			if err != nil {
				return err
			}
			defer stopHA()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := serveAPI(c, log, cfg, nil, os.Stderr) // serve.go: API, dashboard, /metrics
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(os.Stderr, "headroom: %s mode, %d hosts, every %v; dashboard and API on %s\n", cfg.Mode, len(cfg.Hosts), cfg.Interval, srv.URL)
			return c.Run(ctx, srv.Observer.Wrap(func(cy controller.Cycle, err error) {
				if err != nil {
					fmt.Fprintln(os.Stderr, "headroom: cycle:", err)
					return
				}
				fmt.Fprintf(os.Stderr, "%s  vms=%d moves=%d started=%d no-host=%d\n", time.Now().Format(time.TimeOnly),
					len(cy.Snapshot.VMs), len(cy.Plan.Moves), len(cy.Started), len(cy.Plan.Unplaced))
			}))
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "controller configuration (YAML)")
	cmd.Flags().StringVar(&mode, "mode", "", "override the config's mode: dry-run, approve or auto")
	cmd.MarkFlagRequired("config")
	return cmd
}

func newDrainCmd() *cobra.Command {
	var cfgPath, mode string
	cmd := &cobra.Command{
		Use:   "drain <host> --config <file.yaml>",
		Short: "Evacuate a host for maintenance under the same rules",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, cfg, closeAll, err := openController(cfgPath, mode)
			if err != nil {
				return err
			}
			defer closeAll()
			if cfg.HA.Enabled() {
				// Outside the election its moves would not be fenced.
				return fmt.Errorf("--config %s has an ha section: drain through the leader's API (POST /api/drain/%s)", cfgPath, args[0])
			}
			// Rounds until the host is empty or nothing more can move; the
			// error names every VM left (controller/drain.go).
			return c.DrainHost(cmd.Context(), args[0], cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "controller configuration (YAML)")
	cmd.Flags().StringVar(&mode, "mode", "", "override the config's mode")
	cmd.MarkFlagRequired("config")
	return cmd
}

func newEventsCmd() *cobra.Command {
	var path, vm, kind, cfgPath, api, token string
	var asJSON bool
	var limit int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Read the controller's event log",
		Long: `events prints the event log. A running controller holds its log file (bbolt lets one
process open it), so then events reads the log through that controller's API instead:
--api, else the listen address of --config, else http://127.0.0.1:9470, with the bearer
token of --token or HEADROOM_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := store.Filter{VM: vm, Kind: kind, Limit: limit}
			token = apiToken(token, controller.Config{})
			if cfgPath != "" {
				cfg, err := controller.Load(cfgPath)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				if !cmd.Flags().Changed("log") {
					path = cfg.EventLog
				}
				if api == "" {
					api = listenURL(cfg.Listen)
				}
				token = apiToken(token, cfg)
			}
			if cmd.Flags().Changed("api") {
				es, err := eventsFromAPI(cmd.Context(), api, token, f)
				if err != nil {
					return fmt.Errorf("--api: %w", err)
				}
				return printEvents(cmd.OutOrStdout(), es, asJSON)
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("--log: %w", err)
			}
			log, err := store.Open(path)
			if errors.Is(err, store.ErrLocked) {
				if api == "" {
					api = "http://127.0.0.1:9470"
				}
				es, aerr := eventsFromAPI(cmd.Context(), api, token, f)
				if aerr != nil {
					return fmt.Errorf("%w; a running controller holds it, so read it through its API:\n"+
						"  headroom events --api http://<its listen address> --token <token>   (or HEADROOM_TOKEN=<token>)\n"+
						"  headroom events --config <its config> --token <token>\n"+
						"  curl -H 'Authorization: Bearer <token>' 'http://<its listen address>/api/events?limit=50'\n"+
						"tried %s: %v", err, api, aerr)
				}
				return printEvents(cmd.OutOrStdout(), es, asJSON)
			}
			if err != nil {
				return err
			}
			defer log.Close()
			es, err := log.List(f)
			if err != nil {
				return err
			}
			return printEvents(cmd.OutOrStdout(), es, asJSON)
		},
	}
	cmd.Flags().StringVar(&path, "log", "headroom-events.db", "event log file")
	cmd.Flags().StringVar(&cfgPath, "config", "", "the controller's configuration: its event log and listen address")
	cmd.Flags().StringVar(&api, "api", "", "read through this controller API (http://host:port) instead of the file")
	cmd.Flags().StringVar(&token, "token", "", "bearer token for the API (default $HEADROOM_TOKEN)")
	cmd.Flags().StringVar(&vm, "vm", "", "only this VM's events")
	cmd.Flags().StringVar(&kind, "kind", "", "only events of this kind")
	cmd.Flags().IntVar(&limit, "limit", 0, "only the newest N")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// listenURL is the URL a local client reaches a listen address at.
func listenURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// eventsFromAPI reads the event log through a controller's GET /api/events.
func eventsFromAPI(ctx context.Context, api, token string, f store.Filter) ([]store.Event, error) {
	q := url.Values{}
	if f.VM != "" {
		q.Set("vm", f.VM)
	}
	if f.Kind != "" {
		q.Set("kind", f.Kind)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(api, "/")+"/api/events?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var es []store.Event
	if err := json.NewDecoder(resp.Body).Decode(&es); err != nil {
		return nil, fmt.Errorf("reading the events: %w", err)
	}
	return es, nil
}

func printEvents(w io.Writer, es []store.Event, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(es)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "seq\ttime\tkind\tvm\tfrom\tto\tdetail")
	for _, e := range es {
		detail := e.Message
		if e.Reason != nil {
			detail = e.Reason.Rule + ": " + e.Reason.Detail
		}
		if e.Kind == store.MigrationEnd {
			detail = fmt.Sprintf("%s in %.2f s, downtime %.0f ms, %.0f MiB", e.State, e.Seconds, e.DowntimeMs, e.DataMiB)
		}
		if e.Error != "" {
			detail += " error: " + e.Error
		}
		who := e.VM
		if who == "" {
			who = e.Host
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.DateTime), e.Kind, who, e.Source, e.Target, detail)
	}
	return tw.Flush()
}

func newApproveCmd() *cobra.Command {
	var api, token, cfgPath string
	cmd := &cobra.Command{
		Use:   "approve <vm>",
		Short: "Approve a move the controller (approve mode) is waiting on",
		Long: `approve sends POST /api/approve/<vm> to a running controller, as an operator or
admin: the bearer token comes from --token, else HEADROOM_TOKEN, else (with --config and
no api.tokens_file) the admin token the controller wrote beside its event log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath != "" {
				cfg, err := controller.Load(cfgPath)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				if !cmd.Flags().Changed("api") {
					api = listenURL(cfg.Listen)
				}
				token = apiToken(token, cfg)
			} else {
				token = apiToken(token, controller.Config{})
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(api, "/")+"/api/approve/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return fmt.Errorf("--api: %w", err)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("--api: %w", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("approve %s: %s: %s", args[0], resp.Status, strings.TrimSpace(string(b)))
			}
			cmd.OutOrStdout().Write(b)
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "http://127.0.0.1:9470", "the controller's API")
	cmd.Flags().StringVar(&token, "token", "", "bearer token (default $HEADROOM_TOKEN, then the controller's own token file)")
	cmd.Flags().StringVar(&cfgPath, "config", "", "the controller's configuration: its listen address and token file")
	return cmd
}

// apiToken is the bearer token a client command sends: the flag's, else
// HEADROOM_TOKEN, else the admin token a controller without api.tokens_file wrote
// beside its event log (readable only by its owner).
func apiToken(flag string, cfg controller.Config) string {
	if flag != "" {
		return flag
	}
	if t := os.Getenv("HEADROOM_TOKEN"); t != "" {
		return t
	}
	if cfg.EventLog != "" && cfg.API.TokensFile == "" {
		if b, err := os.ReadFile(cfg.EventLog + ".token"); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}
