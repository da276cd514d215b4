package store

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

func TestAppendListAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Event{Kind: Decision, VM: "a", Target: "h2", Reason: &model.Reason{Rule: "overload", Probability: 0.7}}); err != nil {
		t.Fatal(err)
	}
	l.Append(Event{Kind: MigrationStart, VM: "a", Source: "h1", Target: "h2", Options: &model.StateTransferOptions{MaxDowntimeMs: 300}})
	l.Append(Event{Kind: Failure, Host: "h3", Error: "unreachable"})
	l.Append(Event{Kind: MigrationStart, VM: "b", Source: "h1", Target: "h3"})
	l.Append(Event{Kind: MigrationEnd, VM: "a", State: "completed", Seconds: 1.5})
	l.Close()

	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	all, _ := l.List(Filter{})
	if len(all) != 5 || all[0].Seq != 1 || all[4].Seq != 5 {
		t.Fatalf("after reopen %d events, seqs %d..%d; want 5, 1..5", len(all), all[0].Seq, all[len(all)-1].Seq)
	}
	a, _ := l.List(Filter{VM: "a"})
	if len(a) != 3 || a[0].Reason == nil || a[0].Reason.Rule != "overload" || a[1].Options.MaxDowntimeMs != 300 {
		t.Errorf("events of a: %+v", a)
	}
	fl, _ := l.InFlight()
	if len(fl) != 1 || fl[0].VM != "b" {
		t.Errorf("in flight %+v, want only b's start", fl)
	}
	last, _ := l.List(Filter{Limit: 2})
	if len(last) != 2 || last[1].Seq != 5 {
		t.Errorf("limit 2 gave %+v", last)
	}
}

func TestConcurrentAppends(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, err := l.Append(Event{Kind: Decision, VM: "v"}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	all, _ := l.List(Filter{VM: "v"})
	seen := map[uint64]bool{}
	for _, e := range all {
		seen[e.Seq] = true
	}
	if len(all) != 160 || len(seen) != 160 {
		t.Errorf("%d events, %d distinct seqs; want 160 and 160", len(all), len(seen))
	}
}

func TestOpenTwiceSaysInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second open: %v, want an in-use error", err)
	}
}

// An adopted migration and one whose outcome is not settled stay open: a
// restart must follow or settle them; every other end closes its record.
func TestInFlightKeepsUnsettledMigrationsOpen(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, e := range []Event{
		{Kind: MigrationStart, VM: "a", State: StateStarted},
		{Kind: Reconciled, VM: "a", State: StateAdopted},
		{Kind: MigrationStart, VM: "b", State: StateStarted},
		{Kind: MigrationEnd, VM: "b", State: StateNeedsAttention},
		{Kind: MigrationStart, VM: "c", State: StateStarted},
		{Kind: MigrationEnd, VM: "c", State: StateAborted},
		{Kind: MigrationStart, VM: "d", State: StateStarted},
		{Kind: Reconciled, VM: "d", State: StateCompleted},
	} {
		if _, err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	fl, _ := l.InFlight()
	var open []string
	for _, e := range fl {
		open = append(open, e.VM)
	}
	if strings.Join(open, ",") != "a,b" {
		t.Errorf("open %v, want a (adopted) and b (needs attention)", open)
	}
	if _, err := Open(l.db.Path()); !errors.Is(err, ErrLocked) {
		t.Errorf("a second open of a held log: %v, want ErrLocked", err)
	}
}

func TestAppendAllOneTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Event{Kind: Drain, Host: "h0"}); err != nil {
		t.Fatal(err)
	}
	in := []Event{
		{Kind: Decision, State: StatePlanned, VM: "a", Target: "h2"},
		{Kind: Skipped, VM: "a", Message: "dry-run"},
		{Kind: Decision, State: StatePlanned, VM: "b", Target: "h3"},
	}
	out, err := l.AppendAll(in)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range out {
		if e.Seq != uint64(i+2) || e.Time.IsZero() || e.VM != in[i].VM {
			t.Errorf("stamped event %d: %+v", i, e)
		}
	}
	if in[0].Seq != 0 {
		t.Error("AppendAll changed its argument")
	}
	// A batch that cannot be stored leaves no trace: a NaN does not marshal.
	bad := []Event{{Kind: Decision, VM: "c"}, {Kind: Decision, VM: "d", Reason: &model.Reason{Probability: math.NaN()}}}
	if got, err := l.AppendAll(bad); err == nil || got[0].Seq != 0 {
		t.Fatalf("a batch with a NaN: %v, %+v; want an error and no numbers", err, got)
	}
	if empty, err := l.AppendAll(nil); err != nil || len(empty) != 0 {
		t.Fatalf("empty batch: %v %v", empty, err)
	}
	l.Close()

	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	all, _ := l.List(Filter{})
	var kinds []string
	for _, e := range all {
		kinds = append(kinds, e.Kind+":"+e.VM)
	}
	if want := "drain: decision:a skipped:a decision:b"; strings.Join(kinds, " ") != want {
		t.Errorf("after reopen %q, want %q", strings.Join(kinds, " "), want)
	}
	if c, _ := l.List(Filter{VM: "c"}); len(c) != 0 {
		t.Errorf("the failed batch left %+v", c)
	}
	if a, _ := l.List(Filter{VM: "a"}); len(a) != 2 || a[1].Seq != 3 {
		t.Errorf("by-vm index of a: %+v", a)
	}
	// Numbering goes on after the failed batch without a gap.
	if e, err := l.Append(Event{Kind: Warning}); err != nil || e.Seq != 5 {
		t.Errorf("next append: seq %d, %v; want 5", e.Seq, err)
	}
}
