package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/ha"
	"github.com/headroom/headroom/internal/ha/etcdtest"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/metrics"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// A drain asked of a follower is refused 409 Conflict, naming the leader; the
// leader takes it. Needs etcd (skipped without, unless HEADROOM_LAB_REQUIRED=1).
func TestDrainOnAFollowerIsAConflict(t *testing.T) {
	srv := etcdtest.Start(t)
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{}, hs...)
	d.AddVM(hypervisor.VM{ID: "v1", Host: "a", VCPUs: 1, MemMiB: 128, State: hypervisor.StateRunning}, memory.Usage{CPUUtil: 0.1})
	type replica struct {
		node *ha.Node
		url  string
	}
	var rs []replica
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("r%d", i)
		log, err := store.Open(filepath.Join(t.TempDir(), name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { log.Close() })
		cfg := controller.Config{Interval: 10 * time.Second, Mode: controller.DryRun, Hosts: hcs,
			HA: controller.HAConfig{Endpoints: []string{"http://" + srv.Addr}, Prefix: "/drain409", Node: name}}
		c, err := controller.New(cfg, d, log)
		if err != nil {
			t.Fatal(err)
		}
		node, err := ha.Start(cfg.HA.Options())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		c.UseHA(node)
		tokens := NewTokens()
		tokens.Add("ada", Admin, adminTok, time.Time{})
		hs := httptest.NewServer(New(Options{Controller: c, Log: log, Observer: metrics.New(c, log, metrics.Options{}), Tokens: tokens}))
		t.Cleanup(hs.Close)
		rs = append(rs, replica{node, hs.URL})
	}
	var leader, follower replica
	for t0 := time.Now(); leader.node == nil; time.Sleep(20 * time.Millisecond) {
		if time.Since(t0) > 15*time.Second {
			t.Fatal("no leader within 15 s")
		}
		for i, r := range rs {
			if _, ok := r.node.Leading(); ok {
				leader, follower = r, rs[1-i]
			}
		}
	}
	drain := func(url string) (int, string) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", url+"/api/drain/a", nil)
		req.Header.Set("Authorization", "Bearer "+adminTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := drain(follower.url)
	if code != http.StatusConflict || !strings.Contains(body, leader.node.Name()) || !strings.Contains(body, "follower") {
		t.Errorf("drain on the follower: %d %q, want 409 naming the leader %s", code, body, leader.node.Name())
	}
	if code, body := drain(leader.url); code != http.StatusOK {
		t.Errorf("drain on the leader: %d %q", code, body)
	}
}
