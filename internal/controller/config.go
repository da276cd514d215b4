package controller

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/rules"
)

// Mode says what the controller does with a plan.
type Mode string

const (
	DryRun  Mode = "dry-run" // log what it would do, change nothing
	Approve Mode = "approve" // wait for an approval per move
	Auto    Mode = "auto"    // carry the plan out
)

// Config is the live controller's YAML configuration.
type Config struct {
	// Interval between cycles; seconds in the lab, minutes in production.
	Interval time.Duration `yaml:"interval"`
	Mode     Mode          `yaml:"mode"`
	// Policy is "headroom" or "headroom:<file.yaml>" (any simulate policy works).
	Policy string       `yaml:"policy"`
	Hosts  []HostConfig `yaml:"hosts"`
	// MaxConcurrent bounds migrations in flight in the cluster; MaxPerHost bounds
	// those leaving or entering one host.
	MaxConcurrent int `yaml:"max_concurrent"`
	MaxPerHost    int `yaml:"max_per_host"`
	// EventLog is the bbolt file of the durable event log.
	EventLog string `yaml:"event_log"`
	// Listen is the API's address (loopback by default).
	Listen string       `yaml:"listen"`
	Rules  []model.Rule `yaml:"rules"`
	// MigrationTimeout aborts a migration that runs longer.
	MigrationTimeout time.Duration `yaml:"migration_timeout"`
	// StallTimeout aborts a migration that moved no data for this long
	// (default 1m): a link cut or starved mid-move.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// CollectTimeout bounds each cycle's reads of the hosts (default: the
	// interval, within 5s to 10s). A host that has not answered by then is left
	// out of the cycle and logged; the others are served.
	CollectTimeout time.Duration `yaml:"collect_timeout"`
	// FailureBackoff is how long a VM whose move failed twice in a row waits
	// before the next try (default: the interval); each further failure doubles
	// it, up to 32 times. A first failure is retried at the next cycle.
	FailureBackoff time.Duration `yaml:"failure_backoff"`
	// HostCooldown sets aside, as a target, a host a migration to which failed
	// with a connection error (default: two intervals), doubled for each such
	// failure in a row, up to 32 times. A host that does not answer is set
	// aside until it answers again, whatever this says.
	HostCooldown time.Duration `yaml:"host_cooldown"`
	// MaxDowntime is the downtime limit given to every migration.
	MaxDowntime time.Duration `yaml:"max_downtime"`
	// MaxBandwidthMiBps caps every migration's bandwidth (0: no cap), so that
	// moves leave the hosts' network to the VMs' own traffic.
	MaxBandwidthMiBps float64 `yaml:"max_bandwidth_mibps"`
	// ForecastDay is the length of the daily cycle the forecasts look for
	// (default 24h); a lab that replays a day in minutes shortens it.
	ForecastDay time.Duration `yaml:"forecast_day"`
	// AllowPostCopy lets the chooser pick post-copy, which bounds a migration's time
	// but leaves the VM depending on both hosts until it ends.
	AllowPostCopy bool `yaml:"allow_post_copy"`
	// API secures the HTTP API and dashboard (apiconfig.go).
	API APIConfig `yaml:"api"`
	// Source is where stats come from: libvirt (default) or prometheus (sourceconfig.go).
	Source     string       `yaml:"source"`
	Prometheus SourceConfig `yaml:"prometheus"`
	// HA runs several replicas on etcd, one acting (haconfig.go).
	HA HAConfig `yaml:"ha"`
	// ForgetAfter drops the forecast history of a VM absent from every
	// listing this long (default 24h: longer than a maintenance window or a
	// host outage, whose VMs are not counted absent while their host is
	// silent anyway, and short enough that churn does not pile up; a VM that
	// comes back after that starts cold, as a new one would).
	ForgetAfter time.Duration `yaml:"forget_after"`
	// Groups puts VMs in the policy file's groups by name: group -> glob
	// patterns (groups.go).
	Groups map[string][]string `yaml:"groups"`
}

// HostConfig is one libvirt host.
type HostConfig struct {
	ID  string `yaml:"id"`
	URI string `yaml:"uri"`
	// MigrateURI is where QEMU streams to when this host is the target.
	MigrateURI string            `yaml:"migrate_uri"`
	Labels     map[string]string `yaml:"labels"`
	// IdleWatts and MaxWatts give a linear power curve for consolidation decisions.
	IdleWatts float64 `yaml:"idle_watts"`
	MaxWatts  float64 `yaml:"max_watts"`
	// Capacity overrides what the host reports, field by field: cpu is its total
	// in cores x MHz, mem MiB, net and disk KB/s (0 keeps the host's own figure;
	// libvirt reports no net or disk). Cores spreads cpu over that many cores
	// (default: cores at the host's clock). See libvirt.HostConfig.
	Capacity model.Resources `yaml:"capacity"`
	Cores    int             `yaml:"cores"`
}

// Defaults fills what a file left out.
func (c *Config) Defaults() {
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.Mode == "" {
		c.Mode = DryRun
	}
	if c.Policy == "" {
		c.Policy = "headroom"
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 2
	}
	if c.MaxPerHost == 0 {
		c.MaxPerHost = 1
	}
	if c.EventLog == "" {
		c.EventLog = "headroom-events.db"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9470"
	}
	if c.MigrationTimeout == 0 {
		c.MigrationTimeout = 10 * time.Minute
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = time.Minute
	}
	if c.CollectTimeout == 0 {
		c.CollectTimeout = min(max(c.Interval, 5*time.Second), 10*time.Second)
	}
	if c.FailureBackoff == 0 {
		c.FailureBackoff = c.Interval
	}
	if c.HostCooldown == 0 {
		c.HostCooldown = 2 * c.Interval
	}
	if c.MaxDowntime == 0 {
		c.MaxDowntime = 300 * time.Millisecond
	}
	if c.ForecastDay == 0 {
		c.ForecastDay = 24 * time.Hour
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = 24 * time.Hour
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.IdleWatts == 0 && h.MaxWatts == 0 {
			h.IdleWatts, h.MaxWatts = 100, 200
		}
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("interval: %v must be positive", c.Interval)
	case c.Mode != DryRun && c.Mode != Approve && c.Mode != Auto:
		return fmt.Errorf("mode: %q is not dry-run, approve or auto", c.Mode)
	case len(c.Hosts) == 0:
		return fmt.Errorf("hosts: none given")
	case c.MaxConcurrent < 1 || c.MaxPerHost < 1:
		return fmt.Errorf("max_concurrent and max_per_host: must be at least 1")
	case !(c.MaxBandwidthMiBps >= 0) || math.IsInf(c.MaxBandwidthMiBps, 0):
		return fmt.Errorf("max_bandwidth_mibps: %v must be a finite number, 0 for no cap", c.MaxBandwidthMiBps)
	case c.ForecastDay < 0:
		return fmt.Errorf("forecast_day: %v must be positive", c.ForecastDay)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"migration_timeout", c.MigrationTimeout}, {"max_downtime", c.MaxDowntime}, {"stall_timeout", c.StallTimeout},
		{"collect_timeout", c.CollectTimeout}, {"failure_backoff", c.FailureBackoff}, {"host_cooldown", c.HostCooldown},
		{"forget_after", c.ForgetAfter}} {
		if d.v < 0 {
			return fmt.Errorf("%s: %v must be positive", d.name, d.v)
		}
	}
	if err := c.API.validate(); err != nil {
		return err
	}
	if err := c.Prometheus.validate(); err != nil {
		return err
	}
	if err := c.HA.validate(); err != nil {
		return err
	}
	if err := validateGroups(c.Groups); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		if h.ID == "" || h.URI == "" {
			return fmt.Errorf("hosts[%d]: id and uri are required", i)
		}
		if seen[h.ID] {
			return fmt.Errorf("hosts[%d].id: %q given twice", i, h.ID)
		}
		seen[h.ID] = true
		if h.IdleWatts < 0 || h.MaxWatts < h.IdleWatts {
			return fmt.Errorf("hosts[%d]: idle_watts %g and max_watts %g must satisfy 0 <= idle <= max", i, h.IdleWatts, h.MaxWatts)
		}
		if c := h.Capacity; !(c.CPU >= 0 && c.Mem >= 0 && c.Net >= 0 && c.Disk >= 0) || h.Cores < 0 {
			return fmt.Errorf("hosts[%d]: capacity and cores must not be negative", i)
		}
	}
	ids := make([]string, 0, len(c.Hosts))
	for _, h := range c.Hosts {
		ids = append(ids, h.ID)
	}
	// The checks simulate applies to a rules file; VMs are checked against the
	// cluster at start (a rule may name a VM that is not running yet).
	return rules.Check(c.Rules, ids)
}

// Warnings are what the configuration allows but an operator should hear about
// at start.
func (c *Config) Warnings() []string {
	var out []string
	if !loopback(c.Listen) && c.API.TokensFile == "" {
		out = append(out, fmt.Sprintf("listen: %s is not a loopback address and api.tokens_file is empty: "+
			"anyone who can reach it can read the event log and approve migrations", c.Listen))
	}
	return out
}

// loopback reports whether a listen address binds only the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Load reads a YAML config file, fills defaults and validates it.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return Parse(b, path)
}

// Parse reads a YAML config, fills defaults and validates it; errors start
// with name.
func Parse(b []byte, name string) (Config, error) {
	var c Config
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if err := checkDurations(&doc, reflect.TypeOf(c), ""); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkDurations walks a YAML document alongside the Go type it decodes into
// and names the duration fields that yaml.v3 would refuse without saying which
// (a bare number, which has no unit), or would take as "use the default" (an
// explicit zero at the top level, where every duration has a non-zero default).
func checkDurations(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkDurations(c, t, path); err != nil {
				return err
			}
		}
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return nil
		}
		if n.Tag == "!!int" || n.Tag == "!!float" {
			return fmt.Errorf("%s: %s has no unit; write %ss, %sm or %sh", path, n.Value, n.Value, n.Value, n.Value)
		}
		if d, err := time.ParseDuration(n.Value); err == nil && d == 0 && !strings.Contains(path, ".") && !strings.Contains(path, "[") {
			return fmt.Errorf("%s: %s must be positive (leave it out for the default)", path, n.Value)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			if err := checkDurations(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var collect func(t reflect.Type)
		collect = func(t reflect.Type) {
			for i := range t.NumField() {
				f := t.Field(i)
				tag := f.Tag.Get("yaml")
				key, opts, _ := strings.Cut(tag, ",")
				if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
					collect(f.Type)
					continue
				}
				if key == "-" || !f.IsExported() {
					continue
				}
				if key == "" {
					key = strings.ToLower(f.Name)
				}
				fields[key] = f.Type
			}
		}
		collect(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ft, ok := fields[k]
			if !ok {
				continue // the decoder names unknown fields
			}
			p := k
			if path != "" {
				p = path + "." + k
			}
			if err := checkDurations(n.Content[i+1], ft, p); err != nil {
				return err
			}
		}
	}
	return nil
}
