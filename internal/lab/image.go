package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CacheDir is where scripts/install-deps.sh leaves the guest kernel.
func CacheDir() string {
	if d := os.Getenv("HEADROOM_CACHE"); d != "" {
		return d
	}
	return "/var/cache/headroom"
}

// DefaultKernel is the Debian kernel unpacked by scripts/install-deps.sh.
func DefaultKernel() string { return filepath.Join(CacheDir(), "kernel", "vmlinuz") }

const modulePath = "github.com/headroom/headroom"

// moduleRoot finds the headroom source tree, upwards from the working directory, so
// the guest's /init can be built from it.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the headroom source tree (go.mod of " + modulePath +
				") is not above the working directory; run from the repo or pass a prebuilt guest binary")
		}
		dir = parent
	}
}

// buildGuest compiles guest/ as a static binary. CGO_ENABLED=0 matters: the
// initramfs has no libc.
func buildGuest(ctx context.Context, out string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building the guest needs the go tool: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./guest")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./guest: %v\n%s", err, b)
	}
	return nil
}

// buildImage writes dir/vmlinuz and dir/initrd.img: the kernel copied from the cache
// (so domains never point into a cache that install-deps may rewrite) and an
// initramfs whose /init is the guest program.
func buildImage(ctx context.Context, dir, kernel, guestBin string) (kpath, ipath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	kb, err := os.ReadFile(kernel)
	if err != nil {
		return "", "", fmt.Errorf("guest kernel: %w (run scripts/install-deps.sh)", err)
	}
	kpath = filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kpath, kb, 0o644); err != nil {
		return "", "", err
	}
	if guestBin == "" {
		guestBin = filepath.Join(dir, "guest-init")
		if err := buildGuest(ctx, guestBin); err != nil {
			return "", "", err
		}
	}
	ib, err := os.ReadFile(guestBin)
	if err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	if err := guestInitramfs(&buf, ib); err != nil {
		return "", "", err
	}
	ipath = filepath.Join(dir, "initrd.img")
	return kpath, ipath, os.WriteFile(ipath, buf.Bytes(), 0o644)
}

// emulatorWrapper runs QEMU with single-threaded TCG. libvirt asks for "-accel tcg",
// which on an x86 host means multi-threaded TCG. Under TCG, QEMU 7.2 sometimes
// loses guest kernel writes made during a live migration: the guest kernel hits
// list or rbtree corruption on the target seconds to a minute after the move. We
// measured that after about one move in three with multi-threaded TCG and after
// one in ten with thread=single (one vCPU gains nothing from threads anyway).
// libvirt 9.0 has no setting for this, hence the wrapper.
const emulatorWrapper = `#!/bin/sh
# written by headroom lab: QEMU with single-threaded TCG (see internal/lab/image.go)
prev=
for a in "$@"; do
	if [ "$prev" = "-accel" ] && [ "$a" = "tcg" ]; then a="tcg,thread=single"; fi
	set -- "$@" "$a"
	shift
	prev=$a
done
exec /usr/bin/qemu-system-x86_64 "$@"
`

func writeEmulator(dir string) (string, error) {
	path := filepath.Join(dir, "qemu-tcg-single")
	return path, os.WriteFile(path, []byte(emulatorWrapper), 0o755)
}
