// Package lab runs a small cluster of libvirt hosts on one machine, for tests and
// demos of live migration.
//
// Each host is a network namespace (<name>-host<i>) holding its own libvirtd and
// virtlogd in a private mount namespace: a tmpfs on /run and private copies of
// /etc/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, bound from
// the lab's state directory. Hosts are wired by veth pairs to a bridge in the lab's
// own namespace (<name>-lab), on 10.77.0.0/24. Those addresses exist only inside the
// namespaces the lab made; the controller reaches them by dialling from inside the
// lab namespace (see Lab.Dial).
//
// Guests boot the Debian kernel directly with an initramfs whose /init is the
// guest/ program, under TCG (domain type "qemu").
package lab

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Subnet is the lab's private network; host i is Subnet.(i+1) and the lab's own seat
// on the bridge is Subnet.254.
const Subnet = "10.77.0"

// LibvirtPort is libvirtd's TCP port on every host.
const LibvirtPort = 16509

// Config says what lab to make.
type Config struct {
	// Name prefixes every namespace the lab makes; two labs with different names can
	// run at once. Default "hr".
	Name string
	// Hosts is the number of hosts, default 3.
	Hosts int
	// Dir holds the lab's state; default /var/lib/headroom-lab/<Name>.
	Dir string
	// Kernel is the guest kernel; default DefaultKernel().
	Kernel string
	// GuestBin is a prebuilt guest/ binary; empty builds it with the go tool.
	GuestBin string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// NoRAMPad runs guests without the RAM-size workaround for QEMU 7.2's lost
	// TCG writes during migration (see emulatorWrapper), to reproduce the fault.
	NoRAMPad bool
}

func (c *Config) defaults() {
	if c.Name == "" {
		c.Name = "hr"
	}
	if c.Hosts <= 0 {
		c.Hosts = 3
	}
	if c.Dir == "" {
		c.Dir = DefaultDir(c.Name)
	}
	if c.Kernel == "" {
		c.Kernel = DefaultKernel()
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// DefaultDir is where a lab called name keeps its state.
func DefaultDir(name string) string { return filepath.Join("/var/lib/headroom-lab", name) }

// Host is one lab host.
type Host struct {
	Index int    `json:"index"`
	ID    string `json:"id"`    // "host0", ...
	NetNS string `json:"netns"` // its network namespace
	Addr  string `json:"addr"`  // its address on the lab bridge
	UUID  string `json:"uuid"`  // libvirtd's host_uuid
	Dir   string `json:"dir"`   // its private libvirt directories live under here
}

// URI is how the controller, and the other hosts for peer-to-peer migration, reach
// this host's libvirtd.
func (h Host) URI() string { return fmt.Sprintf("qemu+tcp://%s/system", h.Addr) }

// MigrateURI is where QEMU on this host accepts incoming migration streams.
func (h Host) MigrateURI() string { return "tcp://" + h.Addr }

// UnixURI reaches this host's libvirtd over its unix socket, through /proc/<pid>/root
// of its libvirtd (the socket lives on the host's private /run).
func (h Host) UnixURI() (string, error) {
	b, err := os.ReadFile(filepath.Join(h.Dir, "libvirtd.pid"))
	if err != nil {
		return "", fmt.Errorf("%s: libvirtd pid: %w", h.ID, err)
	}
	pid := strings.TrimSpace(string(b))
	return fmt.Sprintf("qemu+unix:///system?socket=/proc/%s/root/run/libvirt/libvirt-sock", pid), nil
}

// Lab is a running lab.
type Lab struct {
	Name   string `json:"name"`
	Dir    string `json:"dir"`
	NetNS  string `json:"netns"` // the lab namespace holding the bridge
	Hosts  []Host `json:"hosts"`
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	// Emulator is the QEMU the guests run (a wrapper, see emulatorWrapper).
	Emulator string `json:"emulator"`

	log io.Writer
}

func (l *Lab) logf(format string, args ...any) {
	if l.log != nil {
		fmt.Fprintf(l.log, "lab %s: "+format+"\n", append([]any{l.Name}, args...)...)
	}
}

// Check reports what is missing for a lab on this machine, or nil.
func Check(cfg Config) error {
	cfg.defaults()
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (namespaces and libvirtd need it)")
	}
	for _, bin := range []string{"ip", "unshare", "libvirtd", "virtlogd", "qemu-system-x86_64", "hostname", "losetup"} {
		if _, err := exec.LookPath(bin); err != nil {
			miss = append(miss, bin)
		}
	}
	// libvirtd resolves its default qemu user and group before reading qemu.conf.
	if _, err := user.LookupGroup("libvirt-qemu"); err != nil {
		miss = append(miss, "group libvirt-qemu")
	}
	if _, err := user.Lookup("libvirt-qemu"); err != nil {
		miss = append(miss, "user libvirt-qemu")
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		miss = append(miss, "guest kernel "+cfg.Kernel)
	}
	if cfg.GuestBin == "" {
		if _, err := exec.LookPath("go"); err != nil {
			miss = append(miss, "go (to build the guest)")
		}
	}
	if len(miss) == 0 && os.Geteuid() == 0 {
		// ip netns needs kernel support and a writable /run/netns.
		if _, err := run(context.Background(), "ip", "netns", "list"); err != nil {
			miss = append(miss, "ip netns ("+err.Error()+")")
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("lab needs: %s (scripts/install-deps.sh installs the packages)", strings.Join(miss, ", "))
	}
	return nil
}

// Up makes a lab: it first removes whatever an earlier lab of the same name left,
// then builds the guest image, the network and the hosts' daemons.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	cfg.defaults()
	if err := Check(cfg); err != nil {
		return nil, err
	}
	if cfg.Hosts > 200 {
		return nil, fmt.Errorf("at most 200 hosts")
	}
	l := &Lab{Name: cfg.Name, Dir: cfg.Dir, NetNS: cfg.Name + "-lab", log: cfg.Log}
	t0 := time.Now()
	if err := down(ctx, cfg.Name, cfg.Dir, cfg.Log, true); err != nil {
		return nil, fmt.Errorf("removing leftovers: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			down(context.Background(), cfg.Name, cfg.Dir, cfg.Log, true)
		}
	}()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}

	l.logf("[1/4] building guest image (kernel %s)", cfg.Kernel)
	var err error
	l.Kernel, l.Initrd, err = buildImage(ctx, filepath.Join(cfg.Dir, "image"), cfg.Kernel, cfg.GuestBin)
	if err != nil {
		return nil, err
	}
	if l.Emulator, err = writeEmulator(filepath.Join(cfg.Dir, "image"), !cfg.NoRAMPad); err != nil {
		return nil, err
	}

	l.logf("[2/4] network: namespace %s, bridge br0 %s.254/24", l.NetNS, Subnet)
	if err := l.makeNetwork(ctx, cfg.Hosts); err != nil {
		return nil, err
	}

	l.logf("[3/4] starting libvirtd on %d hosts", cfg.Hosts)
	for _, h := range l.Hosts {
		if err := l.startHost(ctx, h); err != nil {
			return nil, err
		}
	}
	if err := l.save(); err != nil {
		return nil, err
	}

	l.logf("[4/4] waiting for the daemons")
	t4 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(l.Hosts))
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = l.waitHost(ctx, h, 60*time.Second); errs[i] == nil {
				errs[i] = l.warmHost(ctx, h)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l.logf("  daemons answered and probed QEMU in %.1fs", time.Since(t4).Seconds())
	for _, h := range l.Hosts {
		l.logf("  %s  %-22s  netns %s", h.ID, h.URI(), h.NetNS)
	}
	l.logf("up in %.1fs", time.Since(t0).Seconds())
	ok = true
	return l, nil
}

func (l *Lab) makeNetwork(ctx context.Context, n int) error {
	ip := func(args ...string) error {
		_, err := run(ctx, "ip", args...)
		return err
	}
	lab := l.NetNS
	steps := [][]string{
		{"netns", "add", lab},
		{"-n", lab, "link", "set", "lo", "up"},
		{"-n", lab, "link", "add", "br0", "type", "bridge"},
		{"-n", lab, "addr", "add", Subnet + ".254/24", "dev", "br0"},
		{"-n", lab, "link", "set", "br0", "up"},
	}
	for i := range n {
		h := Host{
			Index: i,
			ID:    fmt.Sprintf("host%d", i),
			NetNS: fmt.Sprintf("%s-host%d", l.Name, i),
			Addr:  fmt.Sprintf("%s.%d", Subnet, i+1),
			UUID:  newUUID(),
			Dir:   filepath.Join(l.Dir, fmt.Sprintf("host%d", i)),
		}
		l.Hosts = append(l.Hosts, h)
		veth := fmt.Sprintf("v%d", i)
		steps = append(steps,
			[]string{"netns", "add", h.NetNS},
			[]string{"-n", h.NetNS, "link", "set", "lo", "up"},
			// Both ends are created inside namespaces: nothing appears in the root one.
			[]string{"-n", lab, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS},
			[]string{"-n", lab, "link", "set", veth, "master", "br0", "up"},
			[]string{"-n", h.NetNS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			[]string{"-n", h.NetNS, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// newUUID returns a random (version 4) UUID; libvirtd rejects a host_uuid that is
// not a valid one, and migration needs the hosts' UUIDs to differ.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const qemuConf = `# written by headroom lab
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
dynamic_ownership = 0
remember_owner = 0
`

func libvirtdConf(h Host) string {
	return fmt.Sprintf(`# written by headroom lab
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = %q
tcp_port = "%d"
host_uuid = %q
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`, h.Addr, LibvirtPort, h.UUID)
}

// startScript runs inside the host's network namespace and a new mount and UTS
// namespace. The daemons daemonise and keep those namespaces alive after the shell
// exits. Their stdio goes to /dev/null so they hold no pipe of ours open.
const startScript = `set -e
hostname "$HOSTID"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock
mount --bind "$D/etc" /etc/libvirt
mount --bind "$D/lib" /var/lib/libvirt
mount --bind "$D/log" /var/log/libvirt
mount --bind "$D/cache" /var/cache/libvirt
virtlogd -d </dev/null >/dev/null 2>&1
libvirtd -d --listen </dev/null >/dev/null 2>&1
for i in $(seq 100); do [ -s /run/libvirtd.pid ] && break; sleep 0.05; done
cat /run/libvirtd.pid > "$D/libvirtd.pid"
`

func (l *Lab) startHost(ctx context.Context, h Host) error {
	// Private copies: /etc/libvirt is copied (so stock settings stay), minus any
	// domains or networks the machine's own libvirt had defined.
	for _, d := range []string{"lib/qemu", "log/qemu", "cache"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt"} {
		if err := os.MkdirAll(d, 0o755); err != nil { // the mount points
			return err
		}
	}
	if _, err := run(ctx, "cp", "-a", "/etc/libvirt", filepath.Join(h.Dir, "etc")); err != nil {
		return err
	}
	for _, d := range []string{"qemu", "qemu/networks", "storage"} {
		os.RemoveAll(filepath.Join(h.Dir, "etc", d))
	}
	os.MkdirAll(filepath.Join(h.Dir, "etc", "qemu"), 0o755)
	if err := os.WriteFile(filepath.Join(h.Dir, "etc", "qemu.conf"), []byte(qemuConf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.Dir, "etc", "libvirtd.conf"), []byte(libvirtdConf(h)), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.NetNS,
		"unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", startScript)
	cmd.Env = append(os.Environ(), "D="+h.Dir, "HOSTID="+l.Name+"-"+h.ID)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: starting libvirtd: %v: %s", h.ID, err, b)
	}
	return nil
}

// waitHost waits until h's libvirtd answers an RPC.
func (l *Lab) waitHost(ctx context.Context, h Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := l.connect(ctx, h)
		if err == nil {
			_, err = c.ConnectGetLibVersion()
			c.Disconnect()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: libvirtd did not answer on %s within %v: %v; its log ends:\n%s",
		h.ID, h.URI(), timeout, last, tail(filepath.Join(h.Dir, "log", "libvirtd.log"), 1500))
}

// warmHost has h's libvirtd build its host capabilities, which it does on first
// need by probing every QEMU binary: seconds under TCG. Otherwise the first
// domain stats call on a host (it needs them for the CPU group) takes 4-5 s,
// which a daemon in service paid long ago, and a controller cannot time it.
func (l *Lab) warmHost(ctx context.Context, h Host) error {
	c, err := l.connect(ctx, h)
	if err != nil {
		return err
	}
	defer c.Disconnect()
	if _, err := c.ConnectGetCapabilities(); err != nil {
		return fmt.Errorf("%s: capabilities: %w", h.ID, err)
	}
	return nil
}

// tail returns the last n bytes of a file, for error messages about daemons whose
// logs are removed with the lab.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Dial connects to addr from the lab's namespace, where the hosts' addresses are
// reachable. Its signature fits net.Dialer.DialContext.
func (l *Lab) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialInNetns(ctx, l.NetNS, network, addr)
}

func (l *Lab) stateFile() string { return filepath.Join(l.Dir, "state.json") }

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(l.stateFile(), b, 0o644)
}

// Open finds the lab called name that Up made (perhaps in another process).
func Open(name, dir string, log io.Writer) (*Lab, error) {
	cfg := Config{Name: name, Dir: dir, Log: log}
	cfg.defaults()
	l := &Lab{Dir: cfg.Dir, log: cfg.Log}
	b, err := os.ReadFile(l.stateFile())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab %q is up (no %s)", cfg.Name, l.stateFile())
		}
		return nil, err
	}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("%s: %w", l.stateFile(), err)
	}
	return l, nil
}

// Down removes the lab: guests, daemons, namespaces (and with them the veths and
// the bridge) and the state directory.
func (l *Lab) Down(ctx context.Context) error {
	return down(ctx, l.Name, l.Dir, l.log, false)
}

// Down removes the lab called name whether or not it is whole: what a crashed run
// left is found by the namespaces' names.
func Down(ctx context.Context, name, dir string, log io.Writer) error {
	cfg := Config{Name: name, Dir: dir, Log: log}
	cfg.defaults()
	return down(ctx, cfg.Name, cfg.Dir, cfg.Log, false)
}

func down(ctx context.Context, name, dir string, log io.Writer, quietIfNone bool) error {
	if log == nil {
		log = io.Discard
	}
	all, err := netnsList(ctx)
	if err != nil {
		return err
	}
	var hosts []string
	labNS := ""
	for _, ns := range all {
		switch {
		case ns == name+"-lab":
			labNS = ns
		case strings.HasPrefix(ns, name+"-host"):
			hosts = append(hosts, ns)
		}
	}
	_, statErr := os.Stat(dir)
	if len(hosts) == 0 && labNS == "" && statErr != nil {
		if !quietIfNone {
			fmt.Fprintf(log, "lab %s: nothing to remove\n", name)
		}
		return nil
	}
	fmt.Fprintf(log, "lab %s: removing %d host namespaces, guests and daemons\n", name, len(hosts))
	var wg sync.WaitGroup
	for _, ns := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			killNetns(ctx, ns, 3*time.Second)
		}()
	}
	wg.Wait()
	detachLoopsUnder(ctx, filepath.Join(dir, "disks")) // the guests are gone
	var errs []error
	for _, ns := range append(hosts, labNS) {
		if ns == "" {
			continue
		}
		if pids := netnsPids(ctx, ns); len(pids) > 0 {
			errs = append(errs, fmt.Errorf("netns %s: processes %v survived SIGKILL", ns, pids))
			continue
		}
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if statErr == nil {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
