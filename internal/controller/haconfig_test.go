package controller

import (
	"strings"
	"testing"
	"time"
)

func TestHAConfigParsesAndErrorsNameTheField(t *testing.T) {
	const hosts = "hosts: [{id: a, uri: x}]\n"
	c, err := Parse([]byte(hosts+"ha: {etcd_endpoints: ['http://127.0.0.1:2379'], lease_ttl: 5s, node: r1, prefix: /hr}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := c.HA.Options()
	if !c.HA.Enabled() || o.TTL != 5*time.Second || o.Name != "r1" || o.Prefix != "/hr" || len(o.Endpoints) != 1 {
		t.Errorf("ha section parsed as %+v", c.HA)
	}
	if c, err := Parse([]byte(hosts), "c.yaml"); err != nil || c.HA.Enabled() {
		t.Errorf("no ha section: enabled %v, %v; want a single node", c.HA.Enabled(), err)
	}
	for in, want := range map[string]string{
		"ha: {node: r1}\n":                                                    "ha.etcd_endpoints: required",
		"ha: {etcd_endpoints: ['127.0.0.1:2379']}\n":                          "ha.etcd_endpoints[0]",
		"ha: {etcd_endpoints: ['http://a:1', 'http://b']}\n":                  "ha.etcd_endpoints[1]",
		"ha: {etcd_endpoints: ['http://a:1'], lease_ttl: 1500ms}\n":           "ha.lease_ttl: 1.5s",
		"ha: {etcd_endpoints: ['http://a:1'], lease_ttl: 1s}\n":               "ha.lease_ttl: 1s",
		"ha: {etcd_endpoints: ['http://a:1'], prefix: headroom}\n":            "ha.prefix",
		"ha: {etcd_endpoints: ['http://a:1'], prefix: /headroom/}\n":          "ha.prefix",
		"ha: {etcd_endpoints: ['http://a:1'], etcd_endpoint: 'http://b:1'}\n": "field etcd_endpoint not found",
	} {
		if _, err := Parse([]byte(hosts+in), "c.yaml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: %v, want an error naming %q", in, err, want)
		}
	}
}
