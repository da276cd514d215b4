package lab

// Faults a test injects into a lab host: its libvirtd stopped, killed and
// started again; its link cut and restored; its outgoing migration streams
// starved to a trickle (tc htb + tbf: these kernels have no netem); a tiny
// file system to fill up. Each acts only on the namespaces and files the lab
// made.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// LibvirtdPID is the pid of host i's libvirtd.
func (l *Lab) LibvirtdPID(i int) (int, error) {
	h, err := l.host(i)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(h.Dir, "libvirtd.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// SignalLibvirtd sends sig to host i's libvirtd (SIGSTOP hangs it, SIGCONT
// wakes it).
func (l *Lab) SignalLibvirtd(i int, sig syscall.Signal) error {
	pid, err := l.LibvirtdPID(i)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("host%d libvirtd (pid %d): %v: %w", i, pid, sig, err)
	}
	return nil
}

// LibvirtdAlive reports whether host i's libvirtd process exists.
func (l *Lab) LibvirtdAlive(i int) bool {
	pid, err := l.LibvirtdPID(i)
	return err == nil && syscall.Kill(pid, 0) == nil
}

// KillLibvirtd SIGKILLs host i's libvirtd and waits until it is gone. Its
// guests' QEMUs and virtlogd live on, as they would on a real host.
func (l *Lab) KillLibvirtd(i int) error {
	pid, err := l.LibvirtdPID(i)
	if err != nil {
		return err
	}
	syscall.Kill(pid, syscall.SIGCONT) // a stopped process dies only once woken
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("host%d libvirtd: %w", i, err)
	}
	for j := 0; j < 100 && syscall.Kill(pid, 0) == nil; j++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StartLibvirtd runs libvirtd again in host i's namespaces (entered through
// its virtlogd, which outlives it) and waits until it answers.
func (l *Lab) StartLibvirtd(ctx context.Context, i int) error {
	h, err := l.host(i)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", h.NetNS).Output()
	if err != nil {
		return err
	}
	logd := ""
	for _, p := range strings.Fields(string(out)) {
		if comm, _ := os.ReadFile("/proc/" + p + "/comm"); strings.TrimSpace(string(comm)) == "virtlogd" {
			logd = p
		}
	}
	if logd == "" {
		return fmt.Errorf("%s: no virtlogd to enter the namespaces through", h.ID)
	}
	script := `rm -f /run/libvirtd.pid
libvirtd -d --listen </dev/null >/dev/null 2>&1
for i in $(seq 100); do [ -s /run/libvirtd.pid ] && break; sleep 0.05; done
cat /run/libvirtd.pid > "$D/libvirtd.pid"`
	cmd := exec.CommandContext(ctx, "nsenter", "-t", logd, "-m", "-u", "-n", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "D="+h.Dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: restarting libvirtd: %v: %s", h.ID, err, b)
	}
	return l.waitHost(ctx, h, 30*time.Second)
}

// LinkDown cuts host i off the lab network (its eth0 down): the controller's
// connections and every migration stream to or from it stall.
func (l *Lab) LinkDown(ctx context.Context, i int) error { return l.link(ctx, i, "down") }

// LinkUp restores host i's link.
func (l *Lab) LinkUp(ctx context.Context, i int) error { return l.link(ctx, i, "up") }

func (l *Lab) link(ctx context.Context, i int, state string) error {
	h, err := l.host(i)
	if err != nil {
		return err
	}
	_, err = run(ctx, "ip", "-n", h.NetNS, "link", "set", "eth0", state)
	return err
}

// Starve caps the migration streams host i sends (to QEMU's incoming ports,
// libvirt's 49152-49215) at rate (a tc rate such as "8kbit"): an htb class
// with a tbf under it, chosen by a u32 filter, so that libvirt's own RPCs on
// the same link keep their speed. Unstarve removes it.
func (l *Lab) Starve(ctx context.Context, i int, rate string) error {
	h, err := l.host(i)
	if err != nil {
		return err
	}
	steps := [][]string{
		{"qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"},
		{"class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"},
		{"class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", rate, "ceil", rate},
		{"qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "tbf", "rate", rate, "burst", "1600", "latency", "1s"},
		{"filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "dport", "49152", "0xffc0", "flowid", "1:20"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "tc", append([]string{"-n", h.NetNS}, s...)...); err != nil {
			l.Unstarve(ctx, i)
			return err
		}
	}
	return nil
}

// Unstarve removes Starve's queueing from host i's link.
func (l *Lab) Unstarve(ctx context.Context, i int) error {
	h, err := l.host(i)
	if err != nil {
		return err
	}
	_, err = run(ctx, "tc", "-n", h.NetNS, "qdisc", "del", "dev", "eth0", "root")
	if err != nil && strings.Contains(err.Error(), "Cannot delete qdisc with handle of zero") {
		return nil // nothing was there
	}
	return err
}

// Job is a migration job libvirt runs for a guest.
type Job struct {
	Host          string
	DataProcessed uint64
	DataTotal     uint64
}

// Jobs asks every host whose libvirtd answers for vm's active jobs (an
// outgoing migration on the source; the target's incoming side has none
// libvirt reports). Hosts that do not answer are listed in silent.
func (l *Lab) Jobs(ctx context.Context, vm string) (jobs []Job, silent []string) {
	for _, h := range l.Hosts {
		c, err := l.connect(ctx, h)
		if err != nil {
			silent = append(silent, h.ID)
			continue
		}
		func() {
			defer c.Disconnect()
			d, err := c.DomainLookupByName(vm)
			if err != nil {
				return
			}
			typ, _, _, total, processed, _, _, _, _, _, _, _, err := c.DomainGetJobInfo(d)
			if err == nil && typ != int32(libvirt.DomainJobNone) {
				jobs = append(jobs, Job{Host: h.ID, DataProcessed: processed, DataTotal: total})
			}
		}()
	}
	return jobs, silent
}

// TinyFS mounts a tmpfs of sizeMiB at dir (made if missing), for a file to
// fill up; the returned function unmounts it.
func TinyFS(ctx context.Context, dir string, sizeMiB int) (func() error, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if _, err := run(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=700", sizeMiB), "headroom-faults", dir); err != nil {
		return nil, err
	}
	return func() error {
		_, err := run(context.Background(), "umount", "-l", dir)
		return err
	}, nil
}

// Fill writes path until its file system is full and returns the bytes
// written; removing path frees them.
func Fill(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i) // not zeros: nothing may store them sparsely
	}
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			// Smaller writes take the last pages.
			for len(buf) > 1 {
				buf = buf[:len(buf)/2]
				for {
					w, err := f.Write(buf)
					n += int64(w)
					if err != nil {
						break
					}
				}
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// LogTail is the end of h's libvirtd log (warnings and errors), for a test
// failure's report.
func LogTail(h Host, n int) string { return tail(filepath.Join(h.Dir, "log", "libvirtd.log"), n) }
