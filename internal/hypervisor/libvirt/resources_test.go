package libvirt

import (
	"math"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/model"
)

func param(f string, v any) lv.TypedParam {
	return lv.TypedParam{Field: f, Value: lv.TypedParamValue{I: v}}
}

// TestGuestMemoryNetDisk: a record with a balloon driver's statistics, two NICs
// and a disk becomes the guest's used memory (total less available, not the
// balloon size nor QEMU's RSS) and byte rates summed over the devices, and the
// VM's demand carries all four resources.
func TestGuestMemoryNetDisk(t *testing.T) {
	rec := func(cpuNs, rx, tx, rd, wr uint64, usable uint64) []lv.TypedParam {
		return []lv.TypedParam{
			param("state.state", int32(1)), param("cpu.time", cpuNs), param("vcpu.current", uint32(1)),
			param("balloon.current", uint64(512*1024)), param("balloon.rss", uint64(700*1024)),
			param("balloon.available", uint64(500*1024)), param("balloon.usable", usable), param("balloon.unused", uint64(100*1024)),
			param("net.count", uint32(2)),
			param("net.0.rx.bytes", rx), param("net.0.tx.bytes", tx),
			param("net.1.rx.bytes", uint64(0)), param("net.1.tx.bytes", tx),
			param("block.count", uint32(1)),
			param("block.0.rd.bytes", rd), param("block.0.wr.bytes", wr),
		}
	}
	t0 := time.Unix(1000, 0)
	base := sample{t: t0, id: 3, c: parseRecord(rec(1e9, 0, 0, 0, 0, 400*1024))}
	cur := sample{t: t0.Add(2 * time.Second), id: 3, c: parseRecord(rec(2e9, 2048*2, 1024*2, 4096*2, 8192*2, 200*1024))}
	vs, _ := rates("vm", "h", cur, []sample{base}, time.Second, 0)
	if vs.GuestUsedMiB != 300 {
		t.Errorf("guest used %v MiB, want 500-200", vs.GuestUsedMiB)
	}
	if vs.NetRxKBps != 2 || vs.NetTxKBps != 2 || vs.DiskRdKBps != 4 || vs.DiskWrKBps != 8 {
		t.Errorf("rates rx %v tx %v rd %v wr %v KB/s, want 2 2 4 8", vs.NetRxKBps, vs.NetTxKBps, vs.DiskRdKBps, vs.DiskWrKBps)
	}
	d := vs.Demand(model.Resources{CPU: 1000, Mem: 512})
	if math.Abs(d.CPU-500) > 1e-9 || d.Mem != 300 || d.Net != 4 || d.Disk != 12 {
		t.Errorf("demand %+v, want cpu 500, mem 300, net 4, disk 12", d)
	}
	// Without the balloon driver's figures: RSS, capped at the balloon.
	vs.GuestUsedMiB = 0
	if d := vs.Demand(model.Resources{CPU: 1000, Mem: 512}); d.Mem != 512 {
		t.Errorf("demand without guest figures: mem %v, want the balloon's 512", d.Mem)
	}
	// Free memory when the guest reports no available figure.
	c := parseRecord(rec(1e9, 0, 0, 0, 0, 0))
	if got := c.guestUsedMiB(); got != 400 {
		t.Errorf("guest used without usable: %v MiB, want 500-100", got)
	}
	if got := (counters{}).guestUsedMiB(); got != 0 {
		t.Errorf("guest used without statistics: %v", got)
	}
}
