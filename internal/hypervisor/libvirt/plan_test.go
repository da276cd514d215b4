package libvirt

import (
	"errors"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

func params(p plan) map[string][]any {
	m := map[string][]any{}
	for _, tp := range p.params {
		m[tp.Field] = append(m[tp.Field], tp.Value.I)
	}
	return m
}

func TestPlanFor(t *testing.T) {
	p, err := planFor(model.StateTransferOptions{
		Mode: model.PostCopy, ParallelStreams: 4, Compression: "zstd", BandwidthMiBps: 99.5, MaxDowntimeMs: 250,
	}, "tcp://10.77.0.2", true)
	if err != nil {
		t.Fatal(err)
	}
	want := lv.MigrateLive | lv.MigratePeer2peer | lv.MigrateAbortOnError | lv.MigratePersistDest |
		lv.MigrateUndefineSource | lv.MigratePostcopy | lv.MigrateParallel | lv.MigrateCompressed
	if p.flags != want {
		t.Errorf("flags %b, want %b", p.flags, want)
	}
	m := params(p)
	if m["migrate_uri"][0] != "tcp://10.77.0.2" || m["bandwidth"][0] != uint64(100) ||
		m["parallel.connections"][0] != int32(4) || m["compression"][0] != "zstd" ||
		m["bandwidth.postcopy"][0] != uint64(100) {
		t.Errorf("params %v", m)
	}
	if !p.postcopy || p.maxDowntime != 250 {
		t.Errorf("plan %+v", p)
	}

	p, _ = planFor(model.StateTransferOptions{Mode: model.AutoConverge, MigrateURI: "tcp://x:49200", Compression: "xbzrle,mt"}, "tcp://y", false)
	if p.flags&lv.MigrateAutoConverge == 0 || p.flags&lv.MigratePersistDest != 0 {
		t.Errorf("flags %b", p.flags)
	}
	if m := params(p); m["migrate_uri"][0] != "tcp://x:49200" || len(m["compression"]) != 2 {
		t.Errorf("params %v", m)
	}
	// Pre-copy has no post-copy phase to cap.
	p, _ = planFor(model.StateTransferOptions{BandwidthMiBps: 20}, "tcp://y", false)
	if m := params(p); m["bandwidth"][0] != uint64(20) || m["bandwidth.postcopy"] != nil {
		t.Errorf("pre-copy params %v", m)
	}

	for _, bad := range []model.StateTransferOptions{
		{Mode: "teleport"}, {Compression: "lz4"}, {Compression: "zlib"}, {BandwidthMiBps: -1}, {MaxDowntimeMs: -5},
	} {
		if _, err := planFor(bad, "tcp://y", true); !errors.Is(err, hypervisor.ErrBadOptions) {
			t.Errorf("%+v: err %v", bad, err)
		}
	}
}

func tp(f string, v any) lv.TypedParam {
	switch x := v.(type) {
	case uint64:
		return lv.TypedParam{Field: f, Value: *lv.NewTypedParamValueUllong(x)}
	case int32:
		return lv.TypedParam{Field: f, Value: *lv.NewTypedParamValueInt(x)}
	case uint32:
		return lv.TypedParam{Field: f, Value: *lv.NewTypedParamValueUint(x)}
	case int64:
		return lv.TypedParam{Field: f, Value: *lv.NewTypedParamValueLlong(x)}
	}
	panic(v)
}

func TestRates(t *testing.T) {
	rec := func(cpu, rx, rd uint64) []lv.TypedParam {
		return []lv.TypedParam{
			tp("state.state", int32(1)), tp("cpu.time", cpu), tp("vcpu.current", uint32(2)),
			tp("balloon.current", uint64(131072)), tp("balloon.rss", uint64(65536)),
			tp("net.count", uint32(2)), tp("net.0.name", uint32(0)), tp("net.0.rx.bytes", rx), tp("net.1.rx.bytes", rx),
			tp("net.0.tx.bytes", uint64(0)), tp("block.count", uint32(1)), tp("block.0.rd.bytes", rd),
			tp("block.0.wr.bytes", uint64(0)), tp("dirtyrate.megabytes_per_second", int64(12)),
		}
	}
	t0 := time.Unix(1000, 0)
	c0 := parseRecord(rec(1e9, 0, 0))
	s0 := sample{t: t0, id: 1, c: c0}
	first, bases := rates("v", "h", s0, nil, time.Second, time.Second)
	if first.Interval != 0 || first.CPUUtil != 0 || first.MemMiB != 128 || first.RSSMiB != 64 || first.DirtyMiBps != 12 {
		t.Fatalf("first %+v", first)
	}
	c1 := parseRecord(rec(2e9, 1024*1024, 2048*1024))
	s1 := sample{t: t0.Add(2 * time.Second), id: 1, c: c1}
	s, bases := rates("v", "h", s1, bases, time.Second, time.Second)
	// 1 s of CPU in 2 s over 2 vCPUs; 2 NICs x 1 MiB in 2 s; 2 MiB read in 2 s.
	if s.CPUUtil != 0.25 || s.CPUCores != 0.5 || s.NetRxKBps != 1024 || s.DiskRdKBps != 1024 || s.Interval != 2*time.Second {
		t.Fatalf("rates %+v", s)
	}
	// A restarted VM (counters back to small values) is a first sample again.
	if r, _ := rates("v", "h", sample{t: t0.Add(4 * time.Second), id: 1, c: c0}, bases, time.Second, time.Second); r.Interval != 0 {
		t.Fatalf("restart %+v", r)
	}
}

func TestParseURI(t *testing.T) {
	for _, c := range []struct{ uri, network, addr, remote string }{
		{"qemu+tcp://10.77.0.1/system", "tcp", "10.77.0.1:16509", "qemu:///system"},
		{"qemu+tcp://10.77.0.1:1234/system", "tcp", "10.77.0.1:1234", "qemu:///system"},
		{"qemu+tls://h.example/system", "tcp", "h.example:16514", "qemu:///system"},
		{"qemu+unix:///system?socket=/tmp/s", "unix", "/tmp/s", "qemu:///system"},
		{"qemu:///system", "unix", "/var/run/libvirt/libvirt-sock", "qemu:///system"},
	} {
		tr, remote, err := parseURI(c.uri)
		if err != nil || tr.network != c.network || tr.addr != c.addr || string(remote) != c.remote {
			t.Errorf("%s: %+v %q %v", c.uri, tr, remote, err)
		}
	}
	for _, bad := range []string{"xen:///system", "qemu+ssh://h/system", "qemu+tcp:///system"} {
		if _, _, err := parseURI(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestProgressOf(t *testing.T) {
	p := progressOf(int32(lv.DomainJobUnbounded), []lv.TypedParam{
		tp("time_elapsed", uint64(1500)), tp("data_total", uint64(100)), tp("data_processed", uint64(40)),
		tp("memory_iteration", uint64(2)), tp("downtime", uint64(41)), tp("memory_dirty_rate", uint64(300)),
	})
	if p.Phase != hypervisor.PhaseRunning || p.Elapsed != 1500*time.Millisecond || p.Fraction() != 0.4 ||
		p.Iteration != 2 || p.Downtime != 41*time.Millisecond || p.DirtyPagesPS != 300 {
		t.Fatalf("%+v", p)
	}
}
