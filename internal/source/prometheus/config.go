// Package prometheus reads VM stats from a Prometheus server through its HTTP
// API, for a controller whose hosts are already scraped by an exporter such as
// prometheus-libvirt-exporter. It is a stats source only: Driver wraps the
// driver that lists hosts and VMs and migrates them (libvirt), and replaces its
// Stats. Backfill reads each VM's history for a warm start, and every Stats call
// reports which hosts have stale or missing series, so that the controller
// holds them instead of deciding on partial data.
package prometheus

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Config is the controller's `prometheus:` section.
type Config struct {
	// URL of the Prometheus server (its HTTP API is under /api/v1).
	URL string `yaml:"url"`
	// Preset names the exporter whose metric names the default queries use:
	// "libvirt-exporter" (the default; prometheus-libvirt-exporter).
	Preset string `yaml:"preset"`
	// Queries override the preset's PromQL templates, one by one.
	Queries Queries `yaml:"queries"`
	// Matchers are extra label matchers every query's selector carries, such as
	// `job="libvirt"`, without braces.
	Matchers string `yaml:"matchers"`
	// VMLabel is the label naming a VM (libvirt's domain name); default "domain".
	VMLabel string `yaml:"vm_label"`
	// HostLabel is the label naming the host the series came from, normally a
	// target label set in the scrape config; default "host".
	HostLabel string `yaml:"host_label"`
	// Hosts maps a HostLabel value to the controller's host ID where they
	// differ (for example an instance address); unmapped values are host IDs.
	Hosts map[string]string `yaml:"hosts"`
	// RateWindow is the range of rate() in the per-cycle queries: at least two
	// scrape intervals; default 2m.
	RateWindow time.Duration `yaml:"rate_window"`
	// MaxAge is how old a VM's or host's newest sample may be before the host
	// is held; default 3 scrape-friendly minutes (3m).
	MaxAge time.Duration `yaml:"max_age"`
	// Timeout bounds each query; default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// WarmStart backfills each VM's history at start-up (default true).
	WarmStart *bool `yaml:"warm_start"`
	// BatchVMs is about how many VMs one backfill range query covers (the
	// server's query.max-samples caps a query's size); default 200.
	BatchVMs int `yaml:"batch_vms"`
	// Parallel is how many backfill queries run at once; default 4.
	Parallel int `yaml:"parallel"`
	// BackfillPoints caps the points per VM and resource a backfill asks
	// for: a longer history is read at a multiple of the engine's step, each
	// point (the average rate over its step) repeated to fill the engine's
	// steps. Default 736, a week at 15 minutes plus the engine's 64-step
	// margin: 96 points a day resolve a daily cycle's hours, while the
	// server's cost grows with every point (Prometheus 2.42 spent about 300
	// CPU seconds on a week of 10,000 VMs at 5 minutes; at the engine's
	// 1-minute step it would be five times that).
	BackfillPoints int `yaml:"backfill_points"`
	// BackfillOldStep is the step a backfill reads history older than two
	// days at (rounded to a multiple of the engine's step; default 1h; at or
	// below the step backfill_points gives, all history is read at that
	// step). The forecast engine reads the last few hours (medians up to 192
	// steps), the day before (the daily lag) and the day before that (the
	// blend learns its weights from each sample's error against its daily
	// lag, with a memory of a day); from older history, one value a week
	// back per step: the weekly lag of the same minute, here the mean of its
	// hour. An hour resolves a daily cycle's shape (24 points a day), and the
	// server's cost per point (its evaluation and JSON: about 45 % of its CPU
	// at 14-minute points) falls by four for those days.
	BackfillOldStep time.Duration `yaml:"backfill_old_step"`
	// Compress asks Prometheus for gzip-compressed answers (default false:
	// uncompressed). Prometheus 2.42 compresses at about 15 MB/s per core
	// (measured on a backfill's 5 MB answers: 0.15 CPU seconds to evaluate,
	// 0.48 with gzip), i.e. ~120 Mbit/s: over any faster link the raw answer
	// arrives sooner and costs the server a third of the CPU. Set it for a
	// slower link.
	Compress bool `yaml:"compress"`
}

// Queries are PromQL templates (Go text/template). Each must return one series
// per VM and host, carrying the VM and host labels, in the unit given:
//
//	{{.Selector}}  label matchers without braces: Matchers and, in a backfill,
//	               the batch's hosts; may be empty
//	{{.Window}}    the rate() range, such as 2m
//	{{.VM}}        the VM label's name
//	{{.Host}}      the host label's name
//
// Net and disk may be empty: those resources then read as zero.
type Queries struct {
	CPU    string `yaml:"cpu"`     // cores: CPU seconds per second
	Mem    string `yaml:"mem"`     // bytes the guest may use (the balloon)
	NetRx  string `yaml:"net_rx"`  // bytes per second
	NetTx  string `yaml:"net_tx"`  // bytes per second
	DiskRd string `yaml:"disk_rd"` // bytes per second
	DiskWr string `yaml:"disk_wr"` // bytes per second
	// VMSeen is the time (Unix seconds) of each VM's newest sample: a VM with
	// none, or an old one, holds its host.
	VMSeen string `yaml:"vm_seen"`
	// HostSeen is the time of each host's newest sample showing the exporter
	// can read the host; one label: the host label. A host without one is held
	// even if it runs no VM.
	HostSeen string `yaml:"host_seen"`
}

// Presets are the default queries by exporter.
var Presets = map[string]Queries{
	// prometheus-libvirt-exporter (Debian's 0.2.0): per-domain counters with
	// labels domain and uuid, one series per device for block and interface.
	"libvirt-exporter": {
		CPU:      `sum by ({{.VM}}, {{.Host}}) (rate(libvirt_domain_info_cpu_time_seconds_total{ {{- .Selector -}} }[{{.Window}}]))`,
		Mem:      `max by ({{.VM}}, {{.Host}}) (libvirt_domain_info_memory_usage_bytes{ {{- .Selector -}} })`,
		NetRx:    `sum by ({{.VM}}, {{.Host}}) (rate(libvirt_domain_interface_stats_receive_bytes_total{ {{- .Selector -}} }[{{.Window}}]))`,
		NetTx:    `sum by ({{.VM}}, {{.Host}}) (rate(libvirt_domain_interface_stats_transmit_bytes_total{ {{- .Selector -}} }[{{.Window}}]))`,
		DiskRd:   `sum by ({{.VM}}, {{.Host}}) (rate(libvirt_domain_block_stats_read_bytes_total{ {{- .Selector -}} }[{{.Window}}]))`,
		DiskWr:   `sum by ({{.VM}}, {{.Host}}) (rate(libvirt_domain_block_stats_write_bytes_total{ {{- .Selector -}} }[{{.Window}}]))`,
		VMSeen:   `max by ({{.VM}}, {{.Host}}) (timestamp(libvirt_domain_info_cpu_time_seconds_total{ {{- .Selector -}} }))`,
		HostSeen: `max by ({{.Host}}) (timestamp(libvirt_up{ {{- .Selector -}} } == 1))`,
	},
}

// DefaultPreset is the preset when none is named.
const DefaultPreset = "libvirt-exporter"

// Defaults fills what the section left out.
func (c *Config) Defaults() {
	if c.Preset == "" {
		c.Preset = DefaultPreset
	}
	if c.VMLabel == "" {
		c.VMLabel = "domain"
	}
	if c.HostLabel == "" {
		c.HostLabel = "host"
	}
	if c.RateWindow == 0 {
		c.RateWindow = 2 * time.Minute
	}
	if c.MaxAge == 0 {
		c.MaxAge = 3 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.BatchVMs == 0 {
		c.BatchVMs = 200
	}
	if c.Parallel == 0 {
		c.Parallel = 4
	}
	if c.BackfillPoints == 0 {
		c.BackfillPoints = 736
	}
	if c.BackfillOldStep == 0 {
		c.BackfillOldStep = time.Hour
	}
}

// Warm reports whether warm start is on.
func (c *Config) Warm() bool { return c.WarmStart == nil || *c.WarmStart }

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate names the first bad field (relative to the section). It expects
// Defaults to have run.
func (c *Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("url: required")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an http(s) URL", c.URL)
	}
	if _, ok := Presets[c.Preset]; !ok {
		return fmt.Errorf("preset: %q is not one of %s", c.Preset, strings.Join(slices.Sorted(maps.Keys(Presets)), ", "))
	}
	if !labelName.MatchString(c.VMLabel) {
		return fmt.Errorf("vm_label: %q is not a label name", c.VMLabel)
	}
	if !labelName.MatchString(c.HostLabel) {
		return fmt.Errorf("host_label: %q is not a label name", c.HostLabel)
	}
	if c.VMLabel == c.HostLabel {
		return fmt.Errorf("host_label: %q is also the vm_label", c.HostLabel)
	}
	if strings.ContainsAny(c.Matchers, "{}") {
		return fmt.Errorf("matchers: %q must not carry braces", c.Matchers)
	}
	for k, v := range c.Hosts {
		if k == "" || v == "" {
			return fmt.Errorf("hosts: %q: %q: empty label value or host ID", k, v)
		}
	}
	switch {
	case c.RateWindow < time.Second:
		return fmt.Errorf("rate_window: %v must be at least 1s", c.RateWindow)
	case c.MaxAge <= 0:
		return fmt.Errorf("max_age: %v must be positive", c.MaxAge)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout: %v must be positive", c.Timeout)
	case c.BatchVMs < 1:
		return fmt.Errorf("batch_vms: %d must be at least 1", c.BatchVMs)
	case c.Parallel < 1 || c.Parallel > 64:
		return fmt.Errorf("parallel: %d out of 1..64", c.Parallel)
	case c.BackfillOldStep < 0:
		return fmt.Errorf("backfill_old_step: %v must not be negative", c.BackfillOldStep)
	case c.BackfillPoints < 2 || c.BackfillPoints > maxPoints:
		return fmt.Errorf("backfill_points: %d out of 2..%d", c.BackfillPoints, maxPoints)
	}
	_, err = c.templates()
	return err
}

// query kinds, in the order of templates' slice.
const (
	qCPU = iota
	qMem
	qNetRx
	qNetTx
	qDiskRd
	qDiskWr
	qVMSeen
	qHostSeen
	nQueries
)

var queryField = [nQueries]string{"cpu", "mem", "net_rx", "net_tx", "disk_rd", "disk_wr", "vm_seen", "host_seen"}

func (q Queries) list() [nQueries]string {
	return [nQueries]string{q.CPU, q.Mem, q.NetRx, q.NetTx, q.DiskRd, q.DiskWr, q.VMSeen, q.HostSeen}
}

// templates parses the preset's queries with the overrides; a nil entry is a
// resource the exporter does not have.
func (c *Config) templates() ([nQueries]*template.Template, error) {
	var out [nQueries]*template.Template
	base, over := Presets[c.Preset].list(), c.Queries.list()
	for i := range out {
		src := base[i]
		if over[i] != "" {
			src = over[i]
		}
		if strings.TrimSpace(src) == "" {
			if i == qCPU || i == qMem || i == qVMSeen {
				return out, fmt.Errorf("queries.%s: required", queryField[i])
			}
			continue
		}
		t, err := template.New(queryField[i]).Option("missingkey=error").Parse(src)
		if err != nil {
			return out, fmt.Errorf("queries.%s: %w", queryField[i], err)
		}
		// A trial render catches references to fields that do not exist.
		if _, err := render(t, vars{Selector: `a="b"`, Window: "1m", VM: "vm", Host: "host"}); err != nil {
			return out, fmt.Errorf("queries.%s: %w", queryField[i], err)
		}
		out[i] = t
	}
	return out, nil
}

// vars are what a query template sees.
type vars struct {
	Selector string
	Window   string
	VM       string
	Host     string
}

func render(t *template.Template, v vars) (string, error) {
	var sb strings.Builder
	if err := t.Execute(&sb, v); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// promDuration writes d as a PromQL duration (whole milliseconds at least).
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(max(int64(d/time.Millisecond), 1), 10) + "ms"
}

// selector joins the configured matchers with a matcher restricting the host
// label to the given values (none: no restriction).
func (c *Config) selector(hostValues []string) string {
	var parts []string
	if m := strings.TrimSpace(c.Matchers); m != "" {
		parts = append(parts, m)
	}
	if len(hostValues) > 0 {
		alt := make([]string, len(hostValues))
		for i, v := range hostValues {
			alt[i] = regexp.QuoteMeta(v)
		}
		parts = append(parts, c.HostLabel+"=~"+strconv.Quote(strings.Join(alt, "|")))
	}
	return strings.Join(parts, ", ")
}

// hostID maps a host label value to the controller's host ID.
func (c *Config) hostID(v string) string {
	if id, ok := c.Hosts[v]; ok {
		return id
	}
	return v
}

// hostValue maps a host ID back to its label value.
func (c *Config) hostValue(id string) string {
	for k, v := range c.Hosts {
		if v == id {
			return k
		}
	}
	return id
}
