package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

func TestApproveOverHTTP(t *testing.T) {
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{}, hs...)
	for _, vm := range []string{"v1", "v2", "v3"} {
		d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 128, State: hypervisor.StateRunning}, memory.Usage{CPUUtil: 0.9})
	}
	log, err := store.Open(filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	c, err := controller.New(controller.Config{Interval: 10 * time.Second, Mode: controller.Approve, Hosts: hcs}, d, log)
	if err != nil {
		t.Fatal(err)
	}
	c.Step(context.Background())
	srv := httptest.NewServer(Handler(c, log))
	defer srv.Close()

	var pending []model.MigrationRequest
	get(t, srv.URL+"/api/pending", &pending)
	if len(pending) == 0 {
		t.Fatal("nothing pending")
	}
	resp, err := http.Post(srv.URL+"/api/approve/"+pending[0].VMInstanceID, "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("approve: %v %v", err, resp.Status)
	}
	resp, _ = http.Post(srv.URL+"/api/approve/nobody", "", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("approving an unknown VM: %s, want 404", resp.Status)
	}
	var events []store.Event
	get(t, srv.URL+"/api/events?kind=approved", &events)
	if len(events) != 1 || events[0].VM != pending[0].VMInstanceID {
		t.Errorf("approved events %+v", events)
	}
	if r, _ := http.Get(srv.URL + "/api/events?limit=x"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("bad limit: %s, want 400", r.Status)
	}
}

func get(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
