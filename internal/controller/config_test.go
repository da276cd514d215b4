package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../examples/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != DryRun || c.Interval != time.Minute || len(c.Hosts) != 2 || len(c.Rules) != 2 || c.Hosts[1].IdleWatts != 100 {
		t.Errorf("example config loaded as %+v", c)
	}
}

func TestCapacityConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("hosts: [{id: a, uri: x, capacity: {cpu: 1800, mem: 4096}, cores: 1}]\n"), 0o644)
	c, err := Load(p)
	if err != nil || c.Hosts[0].Capacity.CPU != 1800 || c.Hosts[0].Capacity.Mem != 4096 || c.Hosts[0].Cores != 1 {
		t.Fatalf("%+v %v", c.Hosts, err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for in, want := range map[string]string{
		"mode: yolo\nhosts: [{id: a, uri: x}]\n":                  `mode: "yolo"`,
		"hosts: []\n":                                             "hosts: none given",
		"hosts: [{id: a}]\n":                                      "hosts[0]: id and uri are required",
		"hosts: [{id: a, uri: x}, {id: a, uri: y}]\n":             `hosts[1].id: "a" given twice`,
		"hosts: [{id: a, uri: x, idle_watts: 50, max_watts: 10}]": "hosts[0]: idle_watts",
		"intervall: 1m\n":                                         "field intervall not found",
		"hosts: [{id: a, uri: x, capacity: {cpu: -1}}]":           "hosts[0]: capacity",
	} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(p, []byte(in), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "c.yaml") {
			t.Errorf("config %q: %v, want an error naming c.yaml and %q", in, err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile("../../examples/controller.yaml"); err == nil {
		f.Add(string(b))
	}
	f.Add("interval: 3s\nhosts: [{id: a, uri: 'qemu+tcp://a/system'}]\nmax_bandwidth_mibps: .nan\n")
	f.Add("hosts: [{id: a, uri: x, capacity: {cpu: -1}}]\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse([]byte(s), "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever parses must be usable: a positive interval, hosts, sane limits.
		if c.Interval <= 0 || len(c.Hosts) == 0 || c.MaxConcurrent < 1 || !(c.MaxBandwidthMiBps >= 0) || c.ForecastDay <= 0 {
			t.Fatalf("accepted %q as %+v", s, c)
		}
	})
}

// Defect 8: what the config must refuse, each error naming the field.
func TestConfigRefusesWhatItShould(t *testing.T) {
	const hosts = "hosts: [{id: a, uri: x}, {id: b, uri: y}]\n"
	for in, want := range map[string]string{
		"interval: 0s\n" + hosts:           "interval: 0s must be positive",
		"interval: 0\n" + hosts:            "interval: 0 has no unit",
		"interval: 3\n" + hosts:            "interval: 3 has no unit",
		"migration_timeout: -1s\n" + hosts: "migration_timeout: -1s",
		"max_downtime: -5ms\n" + hosts:     "max_downtime: -5ms",
		hosts + "rules: [{name: r, kind: anti-affinty, must: true, vms: [x, y]}]\n":                   `rules[0] (r): kind "anti-affinty" is not one of`,
		hosts + "rules: [{name: r, kind: anti-affinity, must: true, vms: [x]}]\n":                     "rules[0] (r): kind anti-affinity needs at least 2 vms",
		hosts + "rules: [{name: r, kind: host-affinity, must: true, vms: [x], hosts: [zz]}]\n":        `rules[0] (r): host "zz" is not configured`,
		hosts + "rules: [{name: r, kind: host-anti-affinity, must: true, vms: [x], hosts: [a, q]}]\n": `rules[0] (r): host "q" is not configured`,
	} {
		if _, err := Parse([]byte(in), "c.yaml"); err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "c.yaml: ") {
			t.Errorf("config %q: %v, want an error naming c.yaml and %q", in, err, want)
		}
	}
}

// Defect 8, last bullet: an API listening beyond loopback without tokens is
// warned about at start.
func TestListenWarning(t *testing.T) {
	for listen, warn := range map[string]bool{
		"127.0.0.1:9470": false, "localhost:9470": false, "[::1]:9470": false,
		"0.0.0.0:9470": true, ":9470": true, "10.0.0.5:9470": true,
	} {
		c := Config{Listen: listen, Hosts: []HostConfig{{ID: "a", URI: "x"}}}
		c.Defaults()
		ws := c.Warnings()
		if got := len(ws) == 1 && strings.Contains(ws[0], listen) && strings.Contains(ws[0], "api.tokens_file"); got != warn {
			t.Errorf("listen %s: warnings %q, want a warning: %v", listen, ws, warn)
		}
		c.API.TokensFile = "/etc/headroom/tokens"
		if ws := c.Warnings(); len(ws) != 0 {
			t.Errorf("listen %s with tokens: %q", listen, ws)
		}
	}
}
