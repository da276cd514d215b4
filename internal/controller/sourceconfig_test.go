package controller

import (
	"strings"
	"testing"
	"time"
)

// TestSourceConfig: the prometheus section parses inline, its errors name the
// field under prometheus., and source must agree with it.
func TestSourceConfig(t *testing.T) {
	base := "hosts: [{id: a, uri: 'qemu+tcp://a/system'}]\n"
	c, err := Parse([]byte(base+"source: prometheus\nprometheus: {url: 'http://p:9090', max_age: 90s, hosts: {'10.0.0.1:9177': a}}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.CheckSource()
	if err != nil || p.MaxAge != 90*time.Second || p.Hosts["10.0.0.1:9177"] != "a" || p.VMLabel != "domain" {
		t.Fatalf("%+v %v", p, err)
	}
	for in, want := range map[string]string{
		"prometheus: {url: 'ftp://p'}\n":                  "c.yaml: prometheus.url:",
		"prometheus: {url: 'http://p', rate_window: 1ms}": "c.yaml: prometheus.rate_window:",
		"prometheus: {url: 'http://p', nope: 1}":          "c.yaml: yaml:",
		// A section that gives only a key added later is still checked.
		"prometheus: {backfill_old_step: -1h}": "c.yaml: prometheus.url: required",
	} {
		if _, err := Parse([]byte(base+in), "c.yaml"); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	for in, want := range map[string]string{
		"source: prometheus\n": "prometheus.url: required",
		"source: graphite\n":   `source: "graphite" is not libvirt or prometheus`,
	} {
		c, err := Parse([]byte(base+in), "c.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CheckSource(); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}
