package controller

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/ha"
)

// HAConfig runs the controller as one of several replicas (internal/ha): an
// etcd election picks the one that acts; the others observe and forecast. With
// no etcd_endpoints the controller runs alone, as before.
type HAConfig struct {
	// Endpoints of the etcd cluster, http://host:port.
	Endpoints []string `yaml:"etcd_endpoints"`
	// Prefix of headroom's keys in etcd (default /headroom); replicas of one
	// cluster share it.
	Prefix string `yaml:"prefix"`
	// LeaseTTL is the leader's lease, whole seconds (default 5s): a crashed
	// leader is replaced about this long after it died.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Node names this replica (default: the hostname); unique per replica.
	Node string `yaml:"node"`
}

// Enabled reports whether the config asks for HA.
func (h HAConfig) Enabled() bool { return len(h.Endpoints) > 0 }

// Options are the ha package's options for this config.
func (h HAConfig) Options() ha.Options {
	return ha.Options{Endpoints: h.Endpoints, Prefix: h.Prefix, TTL: h.LeaseTTL, Name: h.Node}
}

func (h *HAConfig) validate() error {
	if !h.Enabled() {
		if h.Prefix != "" || h.LeaseTTL != 0 || h.Node != "" {
			return fmt.Errorf("ha.etcd_endpoints: required when the ha section is set")
		}
		return nil
	}
	for i, e := range h.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
			return fmt.Errorf("ha.etcd_endpoints[%d]: %q is not http(s)://host:port", i, e)
		}
	}
	if h.Prefix != "" && (!strings.HasPrefix(h.Prefix, "/") || strings.HasSuffix(h.Prefix, "/")) {
		return fmt.Errorf("ha.prefix: %q must start with / and not end with one", h.Prefix)
	}
	if h.LeaseTTL != 0 && (h.LeaseTTL < 2*time.Second || h.LeaseTTL%time.Second != 0) {
		return fmt.Errorf("ha.lease_ttl: %v must be whole seconds, at least 2s", h.LeaseTTL)
	}
	if strings.ContainsAny(h.Node, "\n\r") {
		return fmt.Errorf("ha.node: %q must be one line", h.Node)
	}
	return nil
}
