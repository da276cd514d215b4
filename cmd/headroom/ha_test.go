package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/headroom/headroom/internal/ha/etcdtest"
)

// Three real `headroom run` processes on a real etcd: one leads; killed
// (SIGKILL), another takes over when its lease runs out; stopped (SIGTERM),
// the leader resigns and the last takes over at once. The hosts are libvirt
// URIs nobody answers (loopback port 1): this checks the processes' election,
// not migrations (TestHAFailover in internal/controller does those).
func TestHAReplicasAsProcesses(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "headroom")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte("horizon: 1m\nanti_thrash: {cooldown: 1m}\n"), 0o644)
	const ttl = 3
	procs := map[string]*exec.Cmd{}
	outs := map[string]*bytes.Buffer{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("r%d", i)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cfg := fmt.Sprintf(`interval: 1s
mode: dry-run
policy: "headroom:%s"
hosts: [{id: h1, uri: "qemu+tcp://127.0.0.1:1/system"}]
event_log: %s
listen: %s
ha: {etcd_endpoints: ["%s"], prefix: /proc, lease_ttl: %ds, node: %s}
`, pol, filepath.Join(dir, name+".db"), addr, srv.Endpoint, ttl, name)
		p := filepath.Join(dir, name+".yaml")
		os.WriteFile(p, []byte(cfg), 0o644)
		cmd := exec.Command(bin, "run", "--config", p)
		outs[name] = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = outs[name], outs[name]
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[name] = cmd
	}
	exited := map[string]chan error{}
	for name, cmd := range procs {
		ch := make(chan error, 1)
		go func() { ch <- cmd.Wait() }()
		exited[name] = ch
	}
	defer func() {
		for name, cmd := range procs {
			cmd.Process.Kill()
			<-exited[name]
		}
		if t.Failed() {
			for name, b := range outs {
				t.Logf("%s output:\n%s", name, b.String())
			}
		}
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, "/proc/leader/", clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	// waitNew waits for a leader other than old and reports it and the time taken.
	waitNew := func(old string, d time.Duration) (string, time.Duration) {
		t0 := time.Now()
		for time.Since(t0) < d {
			if l := leader(); l != "" && l != old {
				return l, time.Since(t0)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no leader other than %q within %v", old, d)
		return "", 0
	}
	l1, _ := waitNew("", 60*time.Second)
	procs[l1].Process.Signal(syscall.SIGKILL)
	l2, killed := waitNew(l1, 30*time.Second)
	procs[l2].Process.Signal(syscall.SIGTERM)
	l3, stopped := waitNew(l2, 30*time.Second)
	select {
	case err := <-exited[l2]:
		exited[l2] <- err
		if err != nil {
			t.Errorf("%s on SIGTERM: %v", l2, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30 s of SIGTERM", l2)
	}
	fmt.Printf("FAILOVER-PROCESSES killed_takeover_s=%.2f sigterm_takeover_s=%.2f lease_ttl_s=%d (%s killed, %s stopped, %s leads)\n",
		killed.Seconds(), stopped.Seconds(), ttl, l1, l2, l3)
	// The lease bounds a takeover after a kill (TTL 3 s); 15 s is the acceptance bound.
	if killed > 15*time.Second {
		t.Errorf("takeover after SIGKILL took %v, want at most 15 s", killed)
	}
	// A resigning leader hands over without waiting for its lease.
	if stopped >= time.Duration(ttl)*time.Second {
		t.Errorf("takeover after SIGTERM took %v, want less than the %d s lease: the leader resigns", stopped, ttl)
	}
}
