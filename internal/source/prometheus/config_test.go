package prometheus

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// TestConfigErrorsNameField: every bad field is named in the error.
func TestConfigErrorsNameField(t *testing.T) {
	cases := map[string]string{
		``:                                       "url:",
		`url: ftp://x`:                           "url:",
		"url: http://p:9090\npreset: nope":       "preset:",
		"url: http://p:9090\nvm_label: 'a-b'":    "vm_label:",
		"url: http://p:9090\nhost_label: domain": "host_label:",
		"url: http://p:9090\nmatchers: '{a=\"b\"}'":       "matchers:",
		"url: http://p:9090\nrate_window: 10ms":           "rate_window:",
		"url: http://p:9090\nmax_age: -1s":                "max_age:",
		"url: http://p:9090\nparallel: 100":               "parallel:",
		"url: http://p:9090\nbatch_vms: -1":               "batch_vms:",
		"url: http://p:9090\nbackfill_points: 1":          "backfill_points:",
		"url: http://p:9090\nbackfill_old_step: -1h":      "backfill_old_step:",
		"url: http://p:9090\nhosts: {a: ''}":              "hosts:",
		"url: http://p:9090\nqueries: {cpu: '{{.Nope}}'}": "queries.cpu:",
		"url: http://p:9090\nqueries: {mem: '{{'}":        "queries.mem:",
		"url: http://p:9090\nqueries: {net_rx: '{{.X}'}":  "queries.net_rx:",
	}
	for in, want := range cases {
		var c Config
		if err := yaml.Unmarshal([]byte(in), &c); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		c.Defaults()
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: error %v, want one starting %q", in, err, want)
		}
	}
	var c Config
	yaml.Unmarshal([]byte("url: http://p:9090\nmatchers: 'job=\"libvirt\"'\nqueries: {net_rx: ' ', cpu: 'sum by ({{.VM}}, {{.Host}}) (rate(my_cpu{ {{- .Selector -}} }[{{.Window}}]))'}"), &c)
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ts, _ := c.templates()
	q, _ := render(ts[qCPU], vars{Selector: c.selector([]string{"h.1", `we"ird`}), Window: promDuration(90 * time.Second), VM: c.VMLabel, Host: c.HostLabel})
	if want := `sum by (domain, host) (rate(my_cpu{job="libvirt", host=~"h\\.1|we\"ird"}[90s]))`; q != want {
		t.Errorf("cpu override renders\n%s\nwant\n%s", q, want)
	}
	if ts[qNetRx] != nil || ts[qMem] == nil {
		t.Errorf("a blank override should drop net_rx and keep the preset's mem")
	}
}

// TestPresetNames: the preset's queries read the metric names Debian's
// prometheus-libvirt-exporter 0.2.0 serves (read off its /metrics).
func TestPresetNames(t *testing.T) {
	q := Presets[DefaultPreset]
	for _, w := range []struct{ q, name string }{
		{q.CPU, "libvirt_domain_info_cpu_time_seconds_total"},
		{q.Mem, "libvirt_domain_info_memory_usage_bytes"},
		{q.NetRx, "libvirt_domain_interface_stats_receive_bytes_total"},
		{q.NetTx, "libvirt_domain_interface_stats_transmit_bytes_total"},
		{q.DiskRd, "libvirt_domain_block_stats_read_bytes_total"},
		{q.DiskWr, "libvirt_domain_block_stats_write_bytes_total"},
		{q.HostSeen, "libvirt_up"},
	} {
		if !strings.Contains(w.q, w.name+"{") {
			t.Errorf("%q does not read %s", w.q, w.name)
		}
	}
	c := Config{URL: "http://p"}
	c.Defaults()
	ts, err := c.templates()
	if err != nil {
		t.Fatal(err)
	}
	for i, tm := range ts {
		s, _ := render(tm, vars{Window: "2m", VM: "domain", Host: "host"})
		if strings.Count(s, "(") != strings.Count(s, ")") || strings.Contains(s, "{ ") {
			t.Errorf("%s renders %q", queryField[i], s)
		}
	}
}

// FuzzConfig: any YAML section either fails validation with a field name or
// renders every query, with any host label values, into a selector whose
// regex matches exactly those values.
func FuzzConfig(f *testing.F) {
	f.Add("url: http://p:9090\nqueries: {cpu: 'x{ {{.Selector}} }[{{.Window}}]'}", "h1", `a"b|c`)
	f.Add("url: http://p:9090\nhosts: {'10.0.0.1:9177': h1}\nmatchers: 'job=\"x\"'", `\`, "")
	f.Add("url: http://p\nqueries: {vm_seen: '{{range .}}{{end}}'}", "(", ".*")
	f.Fuzz(func(t *testing.T, doc, h1, h2 string) {
		var c Config
		if yaml.Unmarshal([]byte(doc), &c) != nil || !utf8.ValidString(h1) || !utf8.ValidString(h2) {
			return // label values are UTF-8
		}
		c.Defaults()
		if err := c.Validate(); err != nil {
			if !regexp.MustCompile(`^[a-z_.]+:`).MatchString(err.Error()) {
				t.Fatalf("error names no field: %v", err)
			}
			return
		}
		ts, err := c.templates()
		if err != nil {
			t.Fatal(err)
		}
		sel := c.selector([]string{h1, h2})
		for _, tm := range ts {
			if tm != nil {
				if _, err := render(tm, vars{Selector: sel, Window: "1m", VM: c.VMLabel, Host: c.HostLabel}); err != nil {
					t.Fatalf("validated template fails to render: %v", err)
				}
			}
		}
		i := strings.LastIndex(sel, c.HostLabel+"=~")
		lit, err := strconv.Unquote(sel[i+len(c.HostLabel)+2:])
		if err != nil {
			t.Fatalf("selector %q: %v", sel, err)
		}
		re := regexp.MustCompile("^(?:" + lit + ")$")
		if !re.MatchString(h1) || !re.MatchString(h2) {
			t.Fatalf("selector %q misses %q or %q", sel, h1, h2)
		}
		if h1 != "" && h2 != "" && re.MatchString(h1+h2+"x") {
			t.Fatalf("selector %q matches more", sel)
		}
	})
}
