package controller

import (
	"fmt"
	"reflect"

	"github.com/headroom/headroom/internal/source/prometheus"
)

// SourceConfig is the `prometheus:` section, read when `source: prometheus`:
// where the server is, which exporter's metric names (preset) or PromQL
// templates to use, how labels name VMs and hosts, and when series are too
// old to decide on. See internal/source/prometheus.Config. The driver that
// migrates is always libvirt.
type SourceConfig struct {
	prometheus.Config `yaml:",inline"`
}

// set reports whether the section says anything.
func (s *SourceConfig) set() bool {
	// Any key given makes the section given, so a new key is validated without
	// being listed here.
	return !reflect.ValueOf(s.Config).IsZero()
}

// validate checks a section that is given; whether one is needed depends on
// `source`, which Sources checks.
func (s *SourceConfig) validate() error {
	if !s.set() {
		return nil
	}
	c := s.Config
	c.Defaults()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("prometheus.%w", err)
	}
	return nil
}

// Sources are the values of `source`.
const (
	SourceLibvirt    = "libvirt"
	SourcePrometheus = "prometheus"
)

// CheckSource names the bad field when `source` and the `prometheus:`
// section disagree, and returns the section with defaults filled.
func (c *Config) CheckSource() (prometheus.Config, error) {
	switch c.Source {
	case "", SourceLibvirt:
		return prometheus.Config{}, nil
	case SourcePrometheus:
		p := c.Prometheus.Config
		p.Defaults()
		if err := p.Validate(); err != nil {
			return p, fmt.Errorf("prometheus.%w", err)
		}
		return p, nil
	}
	return prometheus.Config{}, fmt.Errorf("source: %q is not libvirt or prometheus", c.Source)
}
