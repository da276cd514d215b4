package main

import (
	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/source/prometheus"
)

// withSource composes the driver that migrates (libvirt) with the configured
// stats source: with `source: prometheus` stats come from Prometheus, and
// listing, migration and location stay with drv.
func withSource(cfg controller.Config, drv hypervisor.Driver) (hypervisor.Driver, error) {
	pc, err := cfg.CheckSource()
	if err != nil {
		return nil, err
	}
	if cfg.Source != controller.SourcePrometheus {
		return drv, nil
	}
	src, err := prometheus.New(pc, prometheus.Options{})
	if err != nil {
		return nil, err
	}
	return prometheus.NewDriver(drv, src), nil
}
