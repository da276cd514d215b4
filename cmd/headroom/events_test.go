package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/store"
)

// Defect 9: the event log of a running controller is locked; events reads it
// through the controller's API instead, or says exactly how to.
func TestEventsOfARunningController(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	log, err := store.Open(path) // the running controller holds it
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	log.Append(store.Event{Kind: store.Decision, VM: "vm0", Source: "host0", Target: "host1"})
	log.Append(store.Event{Kind: store.Failure, Host: "host2", Error: "connection refused"})

	// Nothing serves the API where the config says it listens: events says how.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	closed := filepath.Join(t.TempDir(), "closed.yaml")
	writeFile(t, closed, "event_log: "+path+"\nlisten: "+ln.Addr().String()+"\nhosts: [{id: host0, uri: 'qemu+tcp://h0/system'}]\n")
	_, err = run("events", "--config", closed)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") ||
		!strings.Contains(err.Error(), "--api") || !strings.Contains(err.Error(), "HEADROOM_TOKEN") {
		t.Errorf("locked log, no API: %v; want the way to read it through the API", err)
	}

	// A controller's API, which wants a token.
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "missing or bad token", http.StatusUnauthorized)
			return
		}
		es, _ := log.List(store.Filter{VM: r.URL.Query().Get("vm")})
		json.NewEncoder(w).Encode(es)
	}))
	defer srv.Close()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, cfg, "event_log: "+path+"\nlisten: "+strings.TrimPrefix(srv.URL, "http://")+"\nhosts: [{id: host0, uri: 'qemu+tcp://h0/system'}]\n")

	t.Setenv("HEADROOM_TOKEN", "s3cret")
	out, err := run("events", "--config", cfg, "--vm", "vm0")
	if err != nil || !strings.Contains(out, "decision") || !strings.Contains(out, "host1") {
		t.Fatalf("through the API: %v\n%s", err, out)
	}
	if got == nil || got.URL.Path != "/api/events" || got.URL.Query().Get("vm") != "vm0" {
		t.Errorf("request %+v", got)
	}
	if _, err := run("events", "--api", srv.URL, "--token", "wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a bad token: %v", err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
