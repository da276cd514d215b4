package store

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestBlobs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := l.GetBlob("engine"); ok || err != nil {
		t.Fatalf("fresh log: ok=%v err=%v, want no blob", ok, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := l.PutBlob("engine", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := l.PutBlob("engine", big); err != nil {
		t.Fatal(err)
	}
	if err := l.PutBlob("", []byte("x")); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := l.Append(Event{Kind: Decision, VM: "v"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// Blobs survive a reopen and do not show up as events.
	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, ok, err := l.GetBlob("engine")
	if err != nil || !ok || !bytes.Equal(b, big) {
		t.Fatalf("after reopen: %d bytes, ok=%v, err=%v", len(b), ok, err)
	}
	es, err := l.List(Filter{})
	if err != nil || len(es) != 1 {
		t.Fatalf("events %v err %v, want the one decision", es, err)
	}
}
