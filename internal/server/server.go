// Package server is the controller's small HTTP API: what is pending approval, what
// is in flight, the event log, and approving a move.
package server

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/store"
)

// Handler serves the API for c and log.
func Handler(c *controller.Controller, log *store.Log) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /api/pending", func(w http.ResponseWriter, _ *http.Request) { reply(w, c.Pending()) })
	mux.HandleFunc("GET /api/inflight", func(w http.ResponseWriter, _ *http.Request) { reply(w, c.InFlight()) })
	mux.HandleFunc("POST /api/approve/{vm}", func(w http.ResponseWriter, r *http.Request) {
		if err := c.ApproveVM(r.PathValue("vm")); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		reply(w, map[string]string{"approved": r.PathValue("vm")})
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		f := store.Filter{VM: r.URL.Query().Get("vm"), Kind: r.URL.Query().Get("kind")}
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				http.Error(w, "limit: want a non-negative integer", http.StatusBadRequest)
				return
			}
			f.Limit = n
		}
		es, err := log.List(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, es)
	})
	return mux
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
