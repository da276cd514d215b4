package main

import (
	"math"
	"testing"
	"time"
)

func TestResourceLevels(t *testing.T) {
	tr, errs := ParseCmdline("headroom.mem_mib=16,64,128 headroom.disk_kbps=0,512 headroom.net_kbps=256 headroom.step=5s headroom.loop=0", DefaultTrace())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// The longest list sets the trace's length: CPU's default has four steps.
	lv := tr.LevelsAt(7 * time.Second)
	if lv.Step != 1 || lv.MemMiB != 64 || lv.DiskKBps != 512 || lv.NetKBps != 256 {
		t.Fatalf("LevelsAt(7s) = %+v", lv)
	}
	if lv := tr.LevelsAt(time.Hour); lv.Step != 3 || lv.MemMiB != 128 || lv.DiskKBps != 512 {
		t.Fatalf("LevelsAt(1h) = %+v, want the last step held", lv)
	}
	for _, bad := range []string{"headroom.mem_mib=-1", "headroom.disk_kbps=NaN", "headroom.net_kbps=1e9", "headroom.mem_mib=x"} {
		if _, errs := ParseCmdline(bad, DefaultTrace()); len(errs) != 1 {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestPacer: the blocks sent follow the rate over time, and a stall does not
// turn into a burst of more than a second's worth.
func TestPacer(t *testing.T) {
	var p pacer
	t0 := time.Unix(0, 0)
	sent := 0
	for i := range 100 { // 10 s at 512 KB/s in 64 KiB blocks: 80 blocks
		sent += p.blocks(t0.Add(time.Duration(i+1)*100*time.Millisecond), 512, 64<<10)
	}
	if sent < 78 || sent > 80 {
		t.Fatalf("sent %d blocks in 10 s at 512 KB/s, want 80", sent)
	}
	if n := p.blocks(t0.Add(time.Minute), 512, 64<<10); n > 9 {
		t.Fatalf("%d blocks after a 50 s stall, want at most a second's 8 (+1)", n)
	}
	if n := p.blocks(t0.Add(2*time.Minute), 0, 64<<10); n != 0 {
		t.Fatalf("%d blocks at rate 0", n)
	}
}

// FuzzParseCmdline: any command line parses without panicking, and what it
// accepts stays within the documented ranges.
func FuzzParseCmdline(f *testing.F) {
	f.Add("headroom.cpu=0.2,0.9 headroom.step=5s headroom.mem_mib=16,64 headroom.disk_kbps=0,512 headroom.net_kbps=256 headroom.loop=0")
	f.Add("headroom.dirty_rate=NaN headroom.mem_mib=1e300 headroom.step=-1s")
	f.Fuzz(func(t *testing.T, s string) {
		tr, _ := ParseCmdline(s, DefaultTrace())
		check := func(name string, xs []float64, hi float64) {
			for _, x := range xs {
				if math.IsNaN(x) || x < 0 || x > hi {
					t.Fatalf("%s: accepted %v from %q", name, x, s)
				}
			}
		}
		check("cpu", tr.CPU, 1)
		check("dirty_rate", tr.DirtyRate, 1e6)
		check("mem_mib", tr.MemMiB, 1<<16)
		check("disk_kbps", tr.DiskKBps, 1e7)
		check("net_kbps", tr.NetKBps, 1e7)
		if tr.Step <= 0 {
			t.Fatalf("step %v from %q", tr.Step, s)
		}
		lv := tr.LevelsAt(time.Duration(len(s)) * time.Second)
		if lv.Step < 0 {
			t.Fatal("negative step")
		}
	})
}

// TestMemoryFootprint: the memory worker holds what the trace asks, and gives it
// back when the trace asks for less.
func TestMemoryFootprint(t *testing.T) {
	tr := Trace{CPU: []float64{0}, MemMiB: []float64{8}, Step: time.Second, Loop: true}
	e := NewEngine(tr, time.Now())
	go e.memory(&e.io)
	wait := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for e.Counters().MemMiB != want {
			if time.Now().After(deadline) {
				t.Fatalf("holding %d MiB, want %d", e.Counters().MemMiB, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait(8)
	tr.MemMiB = []float64{2}
	e.Set(tr, time.Now())
	wait(2)
}
