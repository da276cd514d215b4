// Package etcdtest starts a real etcd server for tests (Debian's etcd-server, on
// loopback ports, in a temporary data dir) and a TCP proxy a test can cut to
// partition one client from it.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequiredEnv=1 turns a missing etcd into a failure instead of a skip, as for the lab.
const RequiredEnv = "HEADROOM_LAB_REQUIRED"

// Binary finds the etcd server: $HEADROOM_ETCD, /usr/bin/etcd, or etcd on PATH.
func Binary() (string, error) {
	if p := os.Getenv("HEADROOM_ETCD"); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd", nil
	}
	p, err := exec.LookPath("etcd")
	if err != nil {
		return "", errors.New("no etcd binary (apt-get install etcd-server, or set HEADROOM_ETCD)")
	}
	return p, nil
}

// Server is one etcd member.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	Addr     string // 127.0.0.1:port
	cmd      *exec.Cmd
	out      *bytes.Buffer
	exited   chan struct{}
}

// freePort asks the kernel for a loopback port nobody holds now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs etcd for the test and stops it at cleanup. It skips the test when
// there is no etcd, unless HEADROOM_LAB_REQUIRED=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		msg := "etcd unavailable: " + err.Error()
		fmt.Fprintln(os.Stderr, "SKIP", t.Name(), msg)
		if os.Getenv(RequiredEnv) == "1" {
			t.Fatal(msg + " (and " + RequiredEnv + "=1)")
		}
		t.Skip(msg)
	}
	var s *Server
	// A port picked free can be taken before etcd binds it: try a few times.
	for try := 0; try < 3; try++ {
		if s, err = start(bin, t.TempDir()); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func start(bin, dir string) (*Server, error) {
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	s := &Server{Endpoint: client, Addr: fmt.Sprintf("127.0.0.1:%d", cp), out: &bytes.Buffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--name", "t", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer, "--initial-cluster-state", "new",
		"--log-level", "warn", "--logger", "zap")
	s.cmd.Stdout, s.cmd.Stderr = &lockedWriter{w: s.out}, &lockedWriter{w: s.out}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the OS thread that forked etcd exits, not the
	// process: a test that locks a goroutine to a thread and lets it die (the
	// lab's setns) would kill etcd at random. So fork from a thread of our own,
	// locked until etcd has exited; etcd still dies with the test process.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with etcd
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("etcd exited at start: %s", s.out.String())
		default:
		}
		if healthy(s.Addr) {
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.Stop()
	return nil, fmt.Errorf("etcd not healthy in 20 s: %s", s.out.String())
}

// healthy asks etcd's /health over plain HTTP.
func healthy(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	b, _ := io.ReadAll(c)
	return bytes.Contains(b, []byte(`"health":"true"`))
}

// Stop kills etcd and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// Proxy forwards a loopback port to etcd. Cut makes it a black hole, as a silent
// partition is: bytes either way are dropped and connections stay open, so the
// client hears nothing (no reset) and must notice by itself.
type Proxy struct {
	Endpoint string
	target   string
	ln       net.Listener

	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// NewProxy forwards to target (host:port) and closes at cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Endpoint: "http://" + ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		cut := p.cut
		p.mu.Unlock()
		if cut {
			go p.copy(io.Discard, c) // held open, never answered
			continue
		}
		var d net.Dialer
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		u, err := d.DialContext(ctx, "tcp", p.target)
		cancel()
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[u] = true
		p.mu.Unlock()
		go p.copy(u, c)
		go p.copy(c, u)
	}
}

// copy forwards src to dst, dropping what it reads while the proxy is cut.
func (p *Proxy) copy(dst io.Writer, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			cut := p.cut
			p.mu.Unlock()
			if !cut {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					src.Close()
					return
				}
			}
		}
		if err != nil {
			if c, ok := dst.(net.Conn); ok {
				c.Close()
			}
			return
		}
	}
}

// Cut starts the partition.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
}

// Heal ends it. Connections that lost bytes are closed, so clients reconnect on
// a clean stream.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Close stops the proxy.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
	p.Heal()
}
