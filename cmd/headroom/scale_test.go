package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --scale multiplies VMs and hosts alike, and --cpuprofile leaves a Go profile
// (gzip-compressed protobuf) behind, or names itself when it cannot.
func TestSimulateScaleAndCPUProfile(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	out, err := run("simulate", "--policy", "dvfs", "--scale", "2", "--json", "--cpuprofile", prof)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		VMs   int `json:"vms"`
		Hosts int `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.VMs != 2*1052 || r.Hosts != 2*800 {
		t.Errorf("--scale 2: %d VMs on %d hosts, want 2104 on 1600", r.VMs, r.Hosts)
	}
	b, err := os.ReadFile(prof)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile %s: %d bytes, err %v; want a gzip'd pprof profile", prof, len(b), err)
	}
	_, err = run("simulate", "--policy", "dvfs", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "p"))
	if err == nil || !strings.Contains(err.Error(), "--cpuprofile") {
		t.Errorf("unwritable profile: error %v, want one naming --cpuprofile", err)
	}
}
