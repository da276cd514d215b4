package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/lab"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// steps runs n controller cycles, gap apart, failing on a cycle error.
func steps(t *testing.T, c *controller.Controller, n int, gap time.Duration) []controller.Cycle {
	t.Helper()
	var out []controller.Cycle
	for i := range n {
		if i > 0 {
			time.Sleep(gap)
		}
		cy, err := c.Step(context.Background())
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		out = append(out, cy)
	}
	return out
}

// TestDryRunChangesNothing: with host0 overloaded (by the eager policy), dry-run
// cycles decide moves and log them as skipped, and libvirt's view of every host
// is the same afterwards.
func TestDryRunChangesNothing(t *testing.T) {
	l := lab.Shared(t)
	vms := []string{"dry-a", "dry-b"}
	boot(t, l, 0, small(vms[0]), small(vms[1]))
	drv := newDriver(t, l, 0)
	c, log := newController(t, l, drv, controller.Config{
		Interval: 2 * time.Second, Mode: controller.DryRun, Policy: writePolicy(t, eager),
	})
	before := statusOf(t, l)
	cycles := steps(t, c, 3, 2*time.Second)
	c.Wait()
	time.Sleep(2 * time.Second) // a migration started by mistake would show by now
	after := statusOf(t, l)
	defer func() {
		if t.Failed() {
			dump(t, log)
		}
	}()

	if before != after {
		t.Errorf("libvirt changed in dry-run:\nbefore\n%safter\n%s", before, after)
	}
	for _, vm := range vms {
		if loc := locate(t, drv, vm); loc.Host != "host0" || len(loc.States) != 1 {
			t.Errorf("%s: %+v, want on host0 only", vm, loc)
		}
	}
	moves := 0
	for _, cy := range cycles {
		moves += len(cy.Plan.Moves)
		if len(cy.Started) > 0 {
			t.Errorf("dry-run started %v", cy.Started)
		}
	}
	decisions := list(t, log, store.Filter{Kind: store.Decision})
	skipped := list(t, log, store.Filter{Kind: store.Skipped})
	if moves == 0 || len(decisions) != moves || len(skipped) != moves {
		t.Fatalf("%d moves planned, %d decisions and %d skips logged: want one of each per move", moves, len(decisions), len(skipped))
	}
	for i, d := range decisions {
		s := skipped[i]
		if d.Mode != string(controller.DryRun) || d.Source != "host0" || s.VM != d.VM || !strings.Contains(s.Message, "dry-run") {
			t.Errorf("decision %+v, skip %+v", d, s)
		}
	}
	if n := len(list(t, log, store.Filter{Kind: store.MigrationStart})); n != 0 || len(c.InFlight()) != 0 {
		t.Errorf("%d migration starts logged, %v in flight", n, c.InFlight())
	}
	t.Logf("%d dry-run decisions over %d cycles; libvirt unchanged:\n%s", moves, len(cycles), after)
}

// TestDrain empties host0 in auto mode, one move at a time off it (max_per_host 1),
// and keeps two guests under a must anti-affinity rule on different hosts.
func TestDrain(t *testing.T) {
	l := lab.Shared(t)
	vms := []string{"drain-a", "drain-b", "drain-c"}
	boot(t, l, 0, small(vms[0]), small(vms[1]), small(vms[2]))
	drv := newDriver(t, l, 0)
	rule := model.Rule{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"drain-a", "drain-b"}}
	c, log := newController(t, l, drv, controller.Config{
		Interval: 2 * time.Second, Mode: controller.Auto, Policy: "headroom",
		MaxConcurrent: 2, MaxPerHost: 1, Rules: []model.Rule{rule},
	})
	defer func() {
		if t.Failed() {
			dump(t, log)
		}
	}()
	ctx := context.Background()
	for round := 0; ; round++ {
		left := onHost(t, drv, "host0")
		if len(left) == 0 {
			break
		}
		if round == 2*len(vms) {
			t.Fatalf("host0 still runs %v after %d drain rounds", left, round)
		}
		plan, err := c.Drain(ctx, "host0")
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Unplaced) > 0 {
			t.Fatalf("drain found no host for %+v", plan.Unplaced)
		}
		c.Wait()
	}

	if es := list(t, log, store.Filter{Kind: store.Drain}); len(es) == 0 || es[0].Host != "host0" {
		t.Errorf("drain events %+v", es)
	}
	where := map[string]string{}
	for _, vm := range vms {
		var rules, ends []string
		for _, e := range list(t, log, store.Filter{VM: vm}) {
			switch e.Kind {
			case store.Decision:
				rules = append(rules, e.Reason.Rule)
			case store.MigrationEnd:
				ends = append(ends, e.State)
				where[vm] = e.Target
			}
		}
		if !slices.Contains(rules, "drain") || !slices.Equal(ends, []string{string(hypervisor.PhaseCompleted)}) {
			t.Errorf("%s: decisions %v, migration ends %v: want a drain decision and one completed move", vm, rules, ends)
		}
		// The move was verified on its target when it ended; libvirt must agree
		// that the guest lives there now and not on host0.
		loc := locate(t, drv, vm)
		if _, there := loc.States[where[vm]]; !there || loc.States["host0"].Active() {
			t.Errorf("%s: %+v, want it on %s", vm, loc, where[vm])
		} else if loc.Host != where[vm] {
			t.Errorf("%s is %s on %s some seconds after its move, want running", vm, loc.States[where[vm]], where[vm])
		}
	}
	if where["drain-a"] == where["drain-b"] {
		t.Errorf("anti-affinity broken: drain-a and drain-b both on %s", where["drain-a"])
	}
	t.Logf("host0 drained: %v", where)
}

// onHost lists the VMs that run on host.
func onHost(t *testing.T, d hypervisor.Driver, host string) []string {
	t.Helper()
	vms, err := d.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vms {
		if v.Host == host && v.State.Active() {
			out = append(out, v.ID)
		}
	}
	return out
}
