package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	mods, err := readModules(ModulesDir(kernel))
	if err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	if err := guestInitramfsModules(&buf, ib, mods); err != nil {
		return "", "", err
	}
	ipath = filepath.Join(dir, "initrd.img")
	return kpath, ipath, os.WriteFile(ipath, buf.Bytes(), 0o644)
}

// ModulesDir is where scripts/install-deps.sh leaves the guest kernel's virtio
// modules (NIC, disk, balloon) beside the kernel, with their load order.
func ModulesDir(kernel string) string { return filepath.Join(filepath.Dir(kernel), "modules") }

// readModules reads dir/order and the modules it names. No directory is no
// modules: the guest then runs without its NIC, disk and balloon drivers.
func readModules(dir string) ([]guestModule, error) {
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var mods []guestModule
	for _, name := range strings.Fields(string(b)) {
		data, err := os.ReadFile(filepath.Join(dir, name+".ko"))
		if err != nil {
			return nil, fmt.Errorf("guest module: %w (run scripts/install-deps.sh)", err)
		}
		mods = append(mods, guestModule{name: name, data: data})
	}
	return mods, nil
}

// emulatorWrapper works around two QEMU 7.2 TCG faults that lose guest writes
// during a live migration (the guest kernel then hits list or rbtree corruption on
// the target, seconds to a minute after the move):
//
//   - Dirty-bitmap sync fast path. For a RAM block whose size is a multiple of 64
//     pages, cpu_physical_memory_sync_dirty_bitmap clears the migration bits a word
//     at a time and never resets the TCG TLB's not-dirty flags, so later stores
//     through a cached TLB entry are not marked dirty and never resent. Fixed
//     upstream in QEMU 9.0 ("physmem: Fix migration dirty bitmap coherency with TCG
//     memory access"); Debian 12's 7.2.22 lacks it. libvirt rounds guest memory to
//     1 MiB, so the wrapper adds 8 KiB (QEMU's own alignment) to both "-m" and the
//     pc.ram backend: the sync then takes the per-page path, which resets the TLB.
//   - libvirt asks for "-accel tcg", multi-threaded TCG on an x86 host; the wrapper
//     makes it thread=single (one vCPU gains nothing from threads).
//
// Source and target both run the wrapper, so their RAM sizes match. libvirt 9.0 has
// no setting for either, hence a wrapper. Config.NoRAMPad leaves the RAM size
// alone, to reproduce the first fault.
const emulatorWrapper = `#!/bin/sh
# written by headroom lab: see internal/lab/image.go, emulatorWrapper
pad=@PAD@
mib= backend=
prev=
for a in "$@"; do
	case "$prev" in -m) case "$a" in *[!0-9]*|'') ;; *) mib=$a ;; esac ;; esac
	case "$a" in *'"id":"pc.ram","size":'*) backend=$(printf '%s' "$a" | sed -n 's/.*"id":"pc.ram","size":\([0-9]*\).*/\1/p') ;; esac
	prev=$a
done
# Pad only when both sizes are known and agree, so QEMU never sees a mismatch.
if [ -z "$mib" ] || [ -z "$backend" ] || [ "$((mib * 1048576))" != "$backend" ]; then pad=0; fi
prev=
for a in "$@"; do
	if [ "$prev" = "-accel" ] && [ "$a" = "tcg" ]; then a="tcg,thread=single"; fi
	if [ "$pad" != 0 ]; then
		if [ "$prev" = "-m" ]; then a="$(((backend + pad) / 1024))k"; fi
		case "$a" in *'"id":"pc.ram","size":'*) a=$(printf '%s' "$a" | sed "s/\"id\":\"pc.ram\",\"size\":$backend/\"id\":\"pc.ram\",\"size\":$((backend + pad))/") ;; esac
	fi
	set -- "$@" "$a"
	shift
	prev=$a
done
exec @QEMU@ "$@"
`

func writeEmulator(dir string, ramPad bool) (string, error) {
	return writeWrapper(dir, "/usr/bin/qemu-system-x86_64", ramPad)
}

// writeWrapper writes emulatorWrapper around qemu (a test passes a program that
// prints its arguments).
func writeWrapper(dir, qemu string, ramPad bool) (string, error) {
	pad := 0
	if ramPad {
		pad = 8192
	}
	script := strings.NewReplacer("@PAD@", strconv.Itoa(pad), "@QEMU@", qemu).Replace(emulatorWrapper)
	path := filepath.Join(dir, "qemu-tcg-single")
	return path, os.WriteFile(path, []byte(script), 0o755)
}
