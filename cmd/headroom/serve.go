package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/metrics"
	"github.com/headroom/headroom/internal/server"
	"github.com/headroom/headroom/internal/store"
)

// apiServer is the one listener of the API, the dashboard and /metrics, for both
// run and demo.
type apiServer struct {
	URL      string
	Observer *metrics.Observer
	srv      *http.Server
}

// Close stops the listener.
func (a *apiServer) Close() error { return a.srv.Close() }

// serveAPI starts the listener on cfg.Listen with cfg.API's TLS and tokens. Tokens
// come from api.tokens_file, plus extra (demo's); with neither, one admin token
// is made for this run and written beside the event log, readable only by its
// owner, so the API is never open. Only token names and file paths are printed
// to w, never a token.
func serveAPI(c *controller.Controller, log *store.Log, cfg controller.Config, extra *server.Tokens, w io.Writer) (*apiServer, error) {
	tokens := server.NewTokens()
	switch {
	case cfg.API.TokensFile != "":
		t, err := server.LoadTokens(cfg.API.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("api.tokens_file: %w", err)
		}
		tokens = t
		fmt.Fprintf(w, "headroom: %d API tokens from %s\n", tokens.Len(), cfg.API.TokensFile)
	case extra != nil:
		tokens = extra
	default:
		path := cfg.EventLog + ".token"
		secret := server.NewSecret()
		if err := writeSecret(path, secret); err != nil {
			return nil, fmt.Errorf("api: no tokens_file, and the run's token could not be written: %w", err)
		}
		tokens.Add("local-admin", server.Admin, secret, time.Time{})
		fmt.Fprintf(w, "headroom: no api.tokens_file; this run's admin token is in %s (send it as 'Authorization: Bearer')\n", path)
	}
	if extra != nil && cfg.API.TokensFile != "" {
		return nil, errors.New("api: a tokens file and generated tokens at once")
	}
	obs := metrics.New(c, log, metrics.Options{PerVM: cfg.API.PerVMMetrics})
	var tlsCfg *tls.Config
	if cfg.API.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.API.TLSCert, cfg.API.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("api.tls_cert/tls_key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cfg.API.ClientCA != "" {
			pem, err := os.ReadFile(cfg.API.ClientCA)
			if err != nil {
				return nil, fmt.Errorf("api.client_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("api.client_ca: %s holds no PEM certificate", cfg.API.ClientCA)
			}
			tlsCfg.ClientCAs = pool
			tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
			if cfg.API.RequireClientCert {
				tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
	}
	h := server.New(server.Options{Controller: c, Log: log, Observer: obs, Tokens: tokens,
		PublicMetrics: cfg.API.PublicMetrics, MaxBodyBytes: cfg.API.MaxBodyBytes, SecureCookie: tlsCfg != nil})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		scheme = "https"
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go srv.Serve(ln)
	return &apiServer{URL: scheme + "://" + ln.Addr().String(), Observer: obs, srv: srv}, nil
}

// writeSecret writes secret to a new file only its owner can read.
func writeSecret(path, secret string) error {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, secret); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func init() { extraCommands = append(extraCommands, newTokenCmd) }

func newTokenCmd() *cobra.Command {
	var name, role string
	var valid time.Duration
	cmd := &cobra.Command{
		Use:   "token --name <who> --role viewer|operator|admin",
		Short: "Make an API token and the tokens-file entry that accepts it",
		Long: `token prints a new random API token once, then the entry to add to the file that
api.tokens_file names. The file holds only the token's SHA-256, so keep the token
itself: it cannot be recovered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name: required (the event log names approvals by it)")
			}
			if _, err := server.ParseRole(role); err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			secret := server.NewSecret()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "token: %s\n# tokens file entry:\n  - name: %s\n    role: %s\n    sha256: %s\n", secret, name, role, server.HashHex(secret))
			if valid > 0 {
				fmt.Fprintf(out, "    expires: %s\n", time.Now().Add(valid).UTC().Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "who the token is for")
	cmd.Flags().StringVar(&role, "role", "viewer", "viewer, operator or admin")
	cmd.Flags().DurationVar(&valid, "valid", 0, "expire after this long (0: never)")
	return cmd
}
