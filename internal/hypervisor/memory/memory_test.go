package memory

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

func cluster(t *testing.T) *Driver {
	t.Helper()
	d := New(Options{BandwidthMiBps: 100},
		hypervisor.Host{ID: "h0", PEs: 4, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}},
		hypervisor.Host{ID: "h1", PEs: 4, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
	t.Cleanup(func() { d.Close() })
	for _, vm := range []hypervisor.VM{
		{ID: "a", Host: "h0", VCPUs: 2, MemMiB: 1024},
		{ID: "b", Host: "h0", VCPUs: 1, MemMiB: 512},
	} {
		if err := d.AddVM(vm, Usage{CPUUtil: 0.5, DirtyMiBps: 10}); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestStatsAndSnapshot(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	hosts, _ := d.Hosts(ctx)
	vms, _ := d.VMs(ctx)
	st, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 2 || st.Hosts[0].VMs != 2 {
		t.Fatalf("hosts %+v", st.Hosts)
	}
	// (0.5*2000 + 0.5*1000) / 4000
	if got := st.Hosts[0].CPUUtil; got < 0.374 || got > 0.376 {
		t.Fatalf("h0 util %v, want 0.375", got)
	}
	snap := hypervisor.Snapshot(0, hosts, vms, st)
	if len(snap.Hosts[0].VMs) != 2 || snap.VMs[0].Demand.CPU != 1000 || snap.Hosts[0].Util != 0.375 {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestMigrateCompletes(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	m, err := d.Migrate(ctx, "a", "h1", model.StateTransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Migrate(ctx, "a", "h1", model.StateTransferOptions{}); !errors.Is(err, hypervisor.ErrBusy) {
		t.Fatalf("second migrate: %v", err)
	}
	// 1 GiB at 100 MiB/s with 10 MiB/s dirtying: about 11 s.
	d.Advance(5 * time.Second)
	if p := m.Progress(); p.Phase != hypervisor.PhaseRunning || p.Fraction() < 0.3 {
		t.Fatalf("after 5s: %+v", p)
	}
	d.Advance(10 * time.Second)
	res, err := m.Wait(ctx)
	if err != nil || !res.Verified || res.Phase != hypervisor.PhaseCompleted {
		t.Fatalf("result %+v, %v", res, err)
	}
	if res.Downtime <= 0 || res.Downtime > 300*time.Millisecond {
		t.Fatalf("downtime %v", res.Downtime)
	}
	loc, _ := d.Locate(ctx, "a")
	if loc.Host != "h1" {
		t.Fatalf("located on %q", loc.Host)
	}
	n := 0
	for p := range m.Updates() {
		n++
		if p.Phase.Finished() && p.Phase != hypervisor.PhaseCompleted {
			t.Fatalf("final %v", p.Phase)
		}
	}
	if n == 0 {
		t.Fatal("no updates")
	}
}

func TestAbortAndNonConvergence(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	d.SetUsage("b", Usage{DirtyMiBps: 500}) // faster than the link: never converges
	m, err := d.Migrate(ctx, "b", "h1", model.StateTransferOptions{BandwidthMiBps: 50})
	if err != nil {
		t.Fatal(err)
	}
	d.Advance(time.Minute)
	if m.Progress().Phase != hypervisor.PhaseRunning {
		t.Fatalf("converged: %+v", m.Progress())
	}
	if err := m.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	d.Advance(10 * time.Millisecond)
	res, err := m.Wait(ctx)
	if !errors.Is(err, hypervisor.ErrAborted) || res.Phase != hypervisor.PhaseCancelled {
		t.Fatalf("%+v %v", res.Progress, err)
	}
	if loc, _ := d.Locate(ctx, "b"); loc.Host != "h0" {
		t.Fatalf("b moved to %s", loc.Host)
	}
	if err := d.Abort(ctx, "b"); !errors.Is(err, hypervisor.ErrNoMigration) {
		t.Fatalf("abort idle: %v", err)
	}
}

func TestAutoConvergeAndPostCopy(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	d.SetUsage("a", Usage{DirtyMiBps: 150})
	d.SetUsage("b", Usage{DirtyMiBps: 150})
	ac, _ := d.Migrate(ctx, "a", "h1", model.StateTransferOptions{Mode: model.AutoConverge})
	pc, _ := d.Migrate(ctx, "b", "h1", model.StateTransferOptions{Mode: model.PostCopy})
	d.Advance(2 * time.Minute)
	for _, m := range []hypervisor.Migration{ac, pc} {
		if res, err := m.Wait(ctx); err != nil || !res.Verified {
			t.Fatalf("%s: %+v %v", m.VM(), res, err)
		}
	}
}

func TestUnreachableAndFailure(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	d.SetUnreachable("h1", true)
	if _, err := d.Migrate(ctx, "a", "h1", model.StateTransferOptions{}); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("migrate to down host: %v", err)
	}
	hosts, err := d.Hosts(ctx)
	var he *hypervisor.HostError
	if !errors.As(err, &he) || he.Host != "h1" || hosts[1].Err == "" {
		t.Fatalf("hosts: %v %+v", err, hosts)
	}
	d.SetUnreachable("h1", false)
	d.FailNext("a", errors.New("link reset"))
	m, _ := d.Migrate(ctx, "a", "h1", model.StateTransferOptions{})
	d.Advance(time.Minute)
	if _, err := m.Wait(ctx); !errors.Is(err, hypervisor.ErrMigrateFailed) {
		t.Fatalf("want failure, got %v", err)
	}
}

func TestRealtime(t *testing.T) {
	d := New(Options{Realtime: true, BandwidthMiBps: 1000}, hypervisor.Host{ID: "x"}, hypervisor.Host{ID: "y"})
	defer d.Close()
	d.AddVM(hypervisor.VM{ID: "v", Host: "x", MemMiB: 100}, Usage{})
	m, _ := d.Migrate(context.Background(), "v", "y", model.StateTransferOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLocateWithAHostDown: a VM on a reachable host is found whatever another
// host says; one on the silent host is uncertain, not gone.
func TestLocateWithAHostDown(t *testing.T) {
	ctx := context.Background()
	d := cluster(t)
	d.SetUnreachable("h1", true)
	if loc, err := d.Locate(ctx, "a"); err != nil || loc.Host != "h0" || len(loc.Unreachable) != 1 || loc.Unreachable[0] != "h1" {
		t.Fatalf("h1 down: %+v %v", loc, err)
	}
	d.SetUnreachable("h1", false)
	d.SetUnreachable("h0", true)
	if loc, err := d.Locate(ctx, "a"); !errors.Is(err, hypervisor.ErrLocationUnknown) || !errors.Is(err, hypervisor.ErrUnreachable) || loc.Host != "" {
		t.Fatalf("h0 down: %+v %v", loc, err)
	}
}

// TestHostLookupByIndex: hosts are found by ID through the index, an unknown
// one is an error naming it, and a repeated ID means the first, as the scan did.
func TestHostLookupByIndex(t *testing.T) {
	d := New(Options{},
		hypervisor.Host{ID: "x", PEs: 2, PEMIPS: 1000},
		hypervisor.Host{ID: "y", PEs: 4, PEMIPS: 500},
		hypervisor.Host{ID: "x", PEs: 8, PEMIPS: 3000})
	defer d.Close()
	if err := d.AddVM(hypervisor.VM{ID: "v", Host: "y", VCPUs: 2, MemMiB: 64}, Usage{}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddVM(hypervisor.VM{ID: "w", Host: "x", VCPUs: 1, MemMiB: 64}, Usage{}); err != nil {
		t.Fatal(err)
	}
	err := d.AddVM(hypervisor.VM{ID: "u", Host: "nowhere", MemMiB: 64}, Usage{})
	if !errors.Is(err, hypervisor.ErrUnknownHost) || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("a VM on an unknown host: %v", err)
	}
	vms, _ := d.VMs(context.Background())
	size := map[string]float64{}
	for _, v := range vms {
		size[v.ID] = v.Size.CPU
	}
	// Size.CPU defaults to vCPUs x the host's PEMIPS: y's 500, the first x's 1000.
	if size["v"] != 1000 || size["w"] != 1000 {
		t.Errorf("VM CPU sizes %v; want v 1000 (2 x 500 on y) and w 1000 (1 x 1000 on the first x)", size)
	}
	if _, err := d.Migrate(context.Background(), "v", "nowhere", model.StateTransferOptions{}); !errors.Is(err, hypervisor.ErrUnknownHost) {
		t.Errorf("a move to an unknown host: %v", err)
	}
}
