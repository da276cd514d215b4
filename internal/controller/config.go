package controller

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/headroom/headroom/internal/model"
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
	if c.MaxDowntime == 0 {
		c.MaxDowntime = 300 * time.Millisecond
	}
	if c.ForecastDay == 0 {
		c.ForecastDay = 24 * time.Hour
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
	if err := c.API.validate(); err != nil {
		return err
	}
	if err := c.Prometheus.validate(); err != nil {
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
	return nil
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
