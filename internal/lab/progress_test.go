package lab

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A line the guest is still writing is not a progress line yet: read cut, it
// would lack the fields after the cut (the transfer lab once read "bad=" missing
// and failed a move that lost nothing).
func TestProgressLinesSkipsTheLineBeingWritten(t *testing.T) {
	dir := t.TempDir()
	l := &Lab{Hosts: []Host{{Dir: dir}}}
	if err := os.MkdirAll(filepath.Dir(l.ConsolePath(0, "g")), 0o755); err != nil {
		t.Fatal(err)
	}
	console := "boot\r\nheadroom-guest t=1.0s iter=1 bad=0\r\nheadroom-guest t=2.0s iter=2 sli"
	if err := os.WriteFile(l.ConsolePath(0, "g"), []byte(console), 0o644); err != nil {
		t.Fatal(err)
	}
	got := l.ProgressLines(0, "g")
	if want := []string{"headroom-guest t=1.0s iter=1 bad=0"}; !slices.Equal(got, want) {
		t.Fatalf("ProgressLines = %q, want %q", got, want)
	}
}
