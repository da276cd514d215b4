package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEmulatorWrapper runs the QEMU wrapper around a program that prints its
// arguments, with the command line libvirt 9.0 builds for a lab guest.
func TestEmulatorWrapper(t *testing.T) {
	dir := t.TempDir()
	dump := filepath.Join(dir, "dump")
	if err := os.WriteFile(dump, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	backend := `{"qom-type":"memory-backend-ram","id":"pc.ram","size":134217728}`
	libvirt := []string{"-name", "guest=vm0", "-machine", "pc-i440fx-7.2,memory-backend=pc.ram",
		"-accel", "tcg", "-cpu", "qemu64", "-m", "128", "-object", backend, "-append", "console=ttyS0 a b"}
	run := func(pad bool, args ...string) []string {
		t.Helper()
		w, err := writeWrapper(dir, dump, pad)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(w, args...).Output()
		if err != nil {
			t.Fatalf("wrapper %v: %v", args, err)
		}
		return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	}
	with := func(args []string, i int, v string) []string {
		c := slices.Clone(args)
		c[i] = v
		return c
	}
	accel := slices.Index(libvirt, "tcg")
	single := with(libvirt, accel, "tcg,thread=single")

	// Padded: 128 MiB + 8 KiB in both places, every other argument as it was.
	want := with(with(single, slices.Index(libvirt, "128"), "131080k"),
		slices.Index(libvirt, backend), strings.Replace(backend, "134217728", "134225920", 1))
	if got := run(true, libvirt...); !slices.Equal(got, want) {
		t.Errorf("padded:\n got %q\nwant %q", got, want)
	}
	// No pad asked for: only the TCG threading changes.
	if got := run(false, libvirt...); !slices.Equal(got, single) {
		t.Errorf("unpadded:\n got %q\nwant %q", got, single)
	}
	// Sizes that disagree, or a backend the wrapper cannot read, are left alone
	// rather than made to mismatch.
	odd := with(libvirt, slices.Index(libvirt, "128"), "256")
	if got := run(true, odd...); !slices.Equal(got, with(odd, accel, "tcg,thread=single")) {
		t.Errorf("mismatched sizes: %q", got)
	}
	noBackend := slices.Concat(libvirt[:10], libvirt[12:])
	if got := run(true, noBackend...); !slices.Equal(got, with(noBackend, accel, "tcg,thread=single")) {
		t.Errorf("no backend: %q", got)
	}
	// libvirt's capability probe has neither.
	probe := []string{"-S", "-no-user-config", "-machine", "none,accel=kvm:tcg", "-qmp", "unix:/x,server=on"}
	if got := run(true, probe...); !slices.Equal(got, probe) {
		t.Errorf("probe: %q", got)
	}
}
