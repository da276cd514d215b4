package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	tr, errs := ParseCmdline("console=ttyS0 quiet headroom.cpu=0.2,0.9 headroom.step=5s headroom.dirty_mib=8 headroom.dirty_rate=10,40 headroom.loop=0 headroom.bogus=1", DefaultTrace())
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "bogus") {
		t.Fatalf("errs = %v, want one about bogus", errs)
	}
	if len(tr.CPU) != 2 || tr.CPU[1] != 0.9 || tr.Step != 5*time.Second || tr.DirtyMiB != 8 || tr.Loop {
		t.Fatalf("trace = %+v", tr)
	}
	cpu, rate, step := tr.At(7 * time.Second)
	if cpu != 0.9 || rate != 40 || step != 1 {
		t.Fatalf("At(7s) = %v %v %v", cpu, rate, step)
	}
	// Not looping: past the end holds the last step.
	if cpu, _, step := tr.At(time.Minute); cpu != 0.9 || step != 1 {
		t.Fatalf("At(1m) = %v step %v", cpu, step)
	}
	if _, errs := ParseCmdline("headroom.cpu=1.5", DefaultTrace()); len(errs) != 1 {
		t.Fatalf("cpu 1.5 accepted")
	}
}

func TestLoopAndShortLists(t *testing.T) {
	tr := Trace{CPU: []float64{0.1, 0.2, 0.3}, DirtyRate: []float64{5}, Step: time.Second, Loop: true}
	if cpu, rate, step := tr.At(4500 * time.Millisecond); cpu != 0.2 || rate != 5 || step != 1 {
		t.Fatalf("At(4.5s) = %v %v %v", cpu, rate, step)
	}
}

// TestEngineDutyCycle runs real slices: the busy fraction must follow the trace and the
// dirtied bytes the rate.
func TestEngineDutyCycle(t *testing.T) {
	tr := Trace{CPU: []float64{0.5}, DirtyRate: []float64{40}, Step: time.Second, DirtyMiB: 4, Loop: true}
	start := time.Now()
	e := NewEngine(tr, start)
	for range 10 {
		e.Slice(time.Now(), time.Now, time.Sleep)
	}
	el := time.Since(start)
	c := e.Counters()
	duty := float64(c.Busy) / float64(el)
	if duty < 0.4 || duty > 0.65 {
		t.Errorf("duty = %.2f over %v, want ~0.5", duty, el)
	}
	// 10 slices of 0.1 s at 40 MiB/s dirty 40 MiB: ten passes over the 4 MiB buffer.
	if c.Dirtied != 40<<20 || c.Iter != 10 {
		t.Errorf("dirtied %d bytes, %d passes; want 40 MiB, 10", c.Dirtied, c.Iter)
	}
	line := e.Status(time.Now(), Counters{}, el)
	if !strings.Contains(line, "dirty=4MiB") || !strings.Contains(line, "want=0.50") {
		t.Errorf("status %q", line)
	}
}

func TestNoZeroPages(t *testing.T) {
	e := NewEngine(Trace{DirtyMiB: 1, CPU: []float64{0}}, time.Now())
	for p := 0; p < len(e.buf); p += pageSize {
		zero := true
		for _, b := range e.buf[p : p+pageSize] {
			if b != 0 {
				zero = false
				break
			}
		}
		if zero {
			t.Fatalf("page %d is all zero", p/pageSize)
		}
	}
}

// TestLostWriteDetected: a page that goes back to old contents (as when a migration
// drops a dirtied page) is counted as bad on the next pass.
func TestLostWriteDetected(t *testing.T) {
	e := NewEngine(Trace{DirtyMiB: 1, CPU: []float64{0}}, time.Now())
	pages := len(e.buf) / pageSize
	e.dirty(pages) // first pass: nothing to check yet
	snapshot := append([]byte(nil), e.buf[:pageSize]...)
	e.dirty(pages) // second pass checks the first
	if e.bad != 0 {
		t.Fatalf("bad=%d on an intact buffer", e.bad)
	}
	copy(e.buf, snapshot) // page 0 loses the second pass's write
	e.dirty(pages)
	if e.bad != 1 {
		t.Fatalf("bad=%d, want 1", e.bad)
	}
}
