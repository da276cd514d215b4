package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequiredEnv, when set to 1 (CI sets it), turns a missing prerequisite into a test
// failure instead of a skip, so a machine without the lab cannot pass silently.
const RequiredEnv = "HEADROOM_LAB_REQUIRED"

// TestName is the lab name for the running test binary: "t" and the package name,
// so two packages' labs can run at once (go test runs packages in parallel).
func TestName() string {
	b := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	var sb strings.Builder
	sb.WriteString("t")
	for _, r := range strings.ToLower(b) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
		}
		if sb.Len() >= 12 {
			break
		}
	}
	return sb.String()
}

// lock serialises labs of one name across processes (two engineers' test runs).
func lock(name string) (release func(), err error) {
	if err := os.MkdirAll("/var/lib/headroom-lab", 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join("/var/lib/headroom-lab", name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		fmt.Fprintf(os.Stderr, "lab %s: another process holds it, waiting\n", name)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	msg := "lab unavailable: " + reason
	fmt.Fprintln(os.Stderr, "SKIP", t.Name(), msg)
	if os.Getenv(RequiredEnv) == "1" {
		t.Fatal(msg + " (and " + RequiredEnv + "=1)")
	}
	t.Skip(msg)
}

// NoRAMPadEnv=1 makes test labs run guests without the RAM-size workaround (see
// emulatorWrapper), to measure the QEMU fault it avoids.
const NoRAMPadEnv = "HEADROOM_LAB_NO_RAM_PAD"

func testConfig(name string, hosts int, t testing.TB) Config {
	return Config{Name: name, Hosts: hosts, Log: testLog{t}, NoRAMPad: os.Getenv(NoRAMPadEnv) == "1"}
}

// testLog sends progress lines to the test log.
type testLog struct{ t testing.TB }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Start makes a lab of n hosts for one test and removes it when the test ends. It
// skips the test (fails it if HEADROOM_LAB_REQUIRED=1) when the machine lacks
// what a lab needs, saying what.
func Start(t testing.TB, n int) *Lab {
	t.Helper()
	name := TestName() + "s"
	if err := Check(Config{Name: name}); err != nil {
		skipOrFail(t, err.Error())
	}
	release, err := lock(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := Up(ctx, testConfig(name, n, t))
	if err != nil {
		release()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		release()
	})
	return l
}

var shared struct {
	once    sync.Once
	hosts   int
	lab     *Lab
	err     error
	skip    string
	release func()
}

// RunShared runs a package's tests (call it from TestMain) with one lab of n hosts
// that the tests share: the first test to call Shared makes it, and it is removed
// after the last test, so tests that need no lab do not pay for one.
func RunShared(m *testing.M, n int) int {
	shared.hosts = n
	code := m.Run()
	if shared.lab != nil {
		if err := shared.lab.Down(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "lab down:", err)
			code = 1
		}
	}
	if shared.release != nil {
		shared.release()
	}
	return code
}

// Shared returns the package's shared lab (see RunShared), making it on first use.
func Shared(t testing.TB) *Lab {
	t.Helper()
	shared.once.Do(func() {
		name := TestName()
		if shared.hosts == 0 {
			shared.hosts = 3
		}
		if err := Check(Config{Name: name}); err != nil {
			shared.skip = err.Error()
			return
		}
		shared.release, shared.err = lock(name)
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cfg := testConfig(name, shared.hosts, t)
		cfg.Log = os.Stderr // outlives this test's log
		t0 := time.Now()
		shared.lab, shared.err = Up(ctx, cfg)
		if shared.err == nil {
			t.Logf("shared lab %s up in %v", name, time.Since(t0).Round(time.Millisecond))
		}
	})
	if shared.skip != "" {
		skipOrFail(t, shared.skip)
	}
	if shared.err != nil {
		t.Fatalf("shared lab: %v", shared.err)
	}
	return shared.lab
}

// BootVM starts a guest on host and waits for its first two progress lines, which
// proves the guest's /init runs and its console reaches the host.
func (l *Lab) BootVM(t testing.TB, host int, spec VMSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := l.StartVM(ctx, host, spec); err != nil {
		t.Fatal(err)
	}
	line, err := l.WaitProgress(ctx, host, spec.Name, 2, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted on host%d in %v: %s", spec.Name, host, time.Since(t0).Round(100*time.Millisecond), line)
}

// RequireDevices skips the test (fails it if HEADROOM_LAB_REQUIRED=1) when the
// guest kernel's virtio modules are missing: without them the guests have no
// NIC, disk or balloon driver, and their network, disk and used memory are
// invisible to libvirt.
func RequireDevices(t testing.TB, l *Lab) {
	t.Helper()
	dir := ModulesDir(DefaultKernel())
	if _, err := os.Stat(filepath.Join(dir, "order")); err != nil {
		skipOrFail(t, "guest kernel modules in "+dir+" (rerun scripts/install-deps.sh): "+err.Error())
	}
}
