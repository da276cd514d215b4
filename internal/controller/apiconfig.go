package controller

import "fmt"

// APIConfig secures the HTTP API, the dashboard and /metrics (internal/server).
type APIConfig struct {
	// TokensFile holds the bearer tokens' SHA-256 hashes, names, roles and optional
	// expiry (see server.LoadTokens). Empty: the controller makes one admin token
	// for its run and writes it beside the event log, readable only by its owner.
	TokensFile string `yaml:"tokens_file"`
	// TLSCert and TLSKey turn on TLS for the listener (PEM files, both or neither).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ClientCA verifies client certificates when a client presents one; with
	// RequireClientCert every connection must present one.
	ClientCA          string `yaml:"client_ca"`
	RequireClientCert bool   `yaml:"require_client_cert"`
	// PublicMetrics serves /metrics without a token (for a scraper that cannot
	// send one); the default asks for a viewer token like the rest.
	PublicMetrics bool `yaml:"public_metrics"`
	// MaxBodyBytes bounds request bodies (default 64 KiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// PerVMMetrics exports per-VM series for at most this many VMs (0: none), a
	// guard on the series count of a large fleet.
	PerVMMetrics int `yaml:"per_vm_metrics"`
}

func (a *APIConfig) validate() error {
	switch {
	case (a.TLSCert == "") != (a.TLSKey == ""):
		return fmt.Errorf("api: tls_cert and tls_key go together")
	case a.ClientCA != "" && a.TLSCert == "":
		return fmt.Errorf("api.client_ca: needs tls_cert and tls_key")
	case a.RequireClientCert && a.ClientCA == "":
		return fmt.Errorf("api.require_client_cert: needs client_ca")
	case a.MaxBodyBytes < 0:
		return fmt.Errorf("api.max_body_bytes: %d must not be negative", a.MaxBodyBytes)
	case a.PerVMMetrics < 0:
		return fmt.Errorf("api.per_vm_metrics: %d must not be negative", a.PerVMMetrics)
	}
	return nil
}
