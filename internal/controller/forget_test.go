package controller

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/store"
)

// deleting hides deleted VMs from the listings and stats, as a host does once
// a VM is undefined.
type deleting struct {
	hypervisor.Driver
	mu   sync.Mutex
	gone map[string]bool
}

func (d *deleting) del(vm string) { d.mu.Lock(); d.gone[vm] = true; d.mu.Unlock() }

func (d *deleting) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	vms, err := d.Driver.VMs(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []hypervisor.VM
	for _, v := range vms {
		if !d.gone[v.ID] {
			out = append(out, v)
		}
	}
	return out, err
}

func (d *deleting) Stats(ctx context.Context) (hypervisor.Stats, error) {
	st, err := d.Driver.Stats(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	var vs []hypervisor.VMStats
	for _, v := range st.VMs {
		if !d.gone[v.VM] {
			vs = append(vs, v)
		}
	}
	st.VMs = vs
	return st, err
}

// A VM deleted from the fleet is forgotten forget_after later: its forecast
// series leave both engines, with one event. A VM on a host that does not
// answer is not counted absent meanwhile.
func TestDepartedVMsAreForgotten(t *testing.T) {
	hs, hcs := memHosts("a", "b", "c")
	md := memory.New(memory.Options{}, hs...)
	addVMs(t, md, "a", memory.Usage{CPUUtil: 0.1}, "v1", "v2")
	addVMs(t, md, "b", memory.Usage{CPUUtil: 0.1}, "v3")
	d := &deleting{Driver: md, gone: map[string]bool{}}
	log := openLog(t, filepath.Join(t.TempDir(), "events.db"))
	c := newCtl(t, Config{Interval: 10 * time.Second, Hosts: hcs, ForgetAfter: time.Hour}, d, log)
	now := time.Now()
	c.now = func() time.Time { return now }
	// step lets dt pass, then runs a cycle.
	step := func(dt time.Duration) {
		t.Helper()
		md.Advance(dt)
		now = now.Add(dt)
		if _, err := c.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		step(10 * time.Second)
	}
	known := func(vm string) bool { return c.eng.Lookup(vm) != nil }
	if !known("v1") || !known("v3") {
		t.Fatal("the engine does not know the VMs it forecast")
	}
	d.del("v1")
	md.SetUnreachable("b", true) // v3 unlisted, but its host is silent
	step(59 * time.Minute)
	if !known("v1") {
		t.Errorf("v1 forgotten 59 minutes after it left, before forget_after")
	}
	step(2 * time.Minute)
	if known("v1") || c.dirty.Lookup("v1") != nil {
		t.Errorf("v1 still in the engines an hour after it left")
	}
	if !known("v2") || !known("v3") {
		t.Errorf("forgot a VM that is listed (v2) or whose host is silent (v3)")
	}
	md.SetUnreachable("b", false)
	d.del("v3")
	step(30 * time.Minute)
	if !known("v3") {
		t.Errorf("v3 forgotten half an hour after its host answered again")
	}
	step(31 * time.Minute)
	if known("v3") {
		t.Errorf("v3 not forgotten an hour after it was last seen on a host that answers")
	}
	var forgotten []string
	for _, e := range events(t, log, store.Filter{Kind: VMForgotten}) {
		forgotten = append(forgotten, e.VM)
	}
	if len(forgotten) != 2 || forgotten[0] != "v1" || forgotten[1] != "v3" {
		t.Errorf("forgotten events %v, want v1 then v3", forgotten)
	}
	// Back after being forgotten: it starts anew.
	d.mu.Lock()
	delete(d.gone, "v1")
	d.mu.Unlock()
	step(10 * time.Second)
	step(10 * time.Second)
	if !known("v1") {
		t.Errorf("v1 back and not forecast again")
	}
}
