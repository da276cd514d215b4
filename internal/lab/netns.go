package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// run runs a command and returns its trimmed stdout, or an error carrying stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// netnsList returns the names of the named network namespaces.
func netnsList(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

func netnsExists(ctx context.Context, name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// netnsPids lists the processes inside a network namespace: the lab's daemons and
// guests. Nothing outside the namespaces the lab made is ever signalled.
func netnsPids(ctx context.Context, ns string) []int {
	out, err := run(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if p, err := strconv.Atoi(f); err == nil && p > 1 && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

// killNetns stops every process in ns: SIGTERM, then SIGKILL for those still there
// after grace.
func killNetns(ctx context.Context, ns string, grace time.Duration) {
	pids := netnsPids(ctx, ns)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(pids) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		pids = netnsPids(ctx, ns)
	}
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	for i := 0; i < 50 && len(netnsPids(ctx, ns)) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// DialInNetns dials addr from inside the named network namespace. The lab's
// addresses exist only there, so this is how the controller, which runs in the root
// namespace, reaches the hosts.
//
// The socket is created by a goroutine whose OS thread has joined the namespace; the
// thread is never unlocked, so Go discards it instead of reusing it elsewhere.
func DialInNetns(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, fmt.Errorf("netns %s: %w", ns, err)}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
