package lab

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// dialer adapts a context dial to go-libvirt's socket.Dialer.
type dialer func() (net.Conn, error)

func (d dialer) Dial() (net.Conn, error) { return d() }

// connect opens a libvirt connection to h over TCP from the lab namespace.
func (l *Lab) connect(ctx context.Context, h Host) (*libvirt.Libvirt, error) {
	addr := net.JoinHostPort(h.Addr, fmt.Sprint(LibvirtPort))
	c := libvirt.NewWithDialer(dialer(func() (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return l.Dial(dctx, "tcp", addr)
	}))
	if err := c.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", h.ID, h.URI(), err)
	}
	return c, nil
}

// VMSpec describes a lab guest.
type VMSpec struct {
	Name      string
	MemoryMiB int // default 128
	VCPUs     int // default 1
	// Args are guest options for the kernel command line, e.g.
	// "headroom.cpu=0.5 headroom.dirty_mib=32 headroom.dirty_rate=20" (see guest/).
	Args string
	// DiskMiB is the size of the guest's virtio disk, default 64.
	DiskMiB int
}

// DiskPath is the image of vm's virtio disk. It lies outside the hosts' private
// directories, so every host sees it at the same path: shared storage, which a
// live migration leaves in place.
func (l *Lab) DiskPath(vm string) string { return filepath.Join(l.Dir, "disks", vm+".img") }

// DomainXML is domainXML with the loop device already attached to s's disk image,
// if any (else the image itself, which libvirt will define but not migrate).
func (l *Lab) DomainXML(s VMSpec) string {
	dev := ""
	if devs := loopsOf(context.Background(), l.DiskPath(s.Name)); len(devs) > 0 {
		dev = devs[0]
	}
	return l.domainXML(s, dev)
}

// domainXML is the definition of a lab guest: TCG, direct kernel boot, the console on
// the first serial port (logged to a file on whichever host runs it) and the guest's
// steering port on the second, a unix socket.
//
// It has a virtio disk, a loop device (dev) over DiskPath: libvirt migrates a
// disk without copying it only if it is a block device or on a network file
// system, and then only with cache=none. It also has a virtio NIC on a tap in its host's namespace (the
// guest's frames end there, counted by the tap) and a balloon that reports the
// guest's memory statistics every second: its network, disk and used memory as
// libvirt's domain stats see them.
//
// The emulator is a wrapper that picks single-threaded TCG (see emulatorWrapper).
func (l *Lab) domainXML(s VMSpec, dev string) string {
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 128
	}
	if s.VCPUs == 0 {
		s.VCPUs = 1
	}
	emulator := l.Emulator
	if emulator == "" {
		emulator = "/usr/bin/qemu-system-x86_64"
	}
	e := html.EscapeString
	diskType, srcAttr, src := "block", "dev", dev
	if dev == "" {
		diskType, srcAttr, src = "file", "file", l.DiskPath(s.Name)
	}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%[1]s</name>
  <memory unit='MiB'>%[2]d</memory>
  <vcpu>%[3]d</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>%[4]s</kernel>
    <initrd>%[5]s</initrd>
    <cmdline>console=ttyS0 quiet mitigations=off %[6]s</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%[7]s</emulator>
    <serial type='pty'>
      <log file='/var/log/libvirt/qemu/%[1]s-console.log' append='on'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/%[1]s.steer'/>
      <target port='1'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <disk type='%[8]s' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source %[9]s='%[10]s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <model type='virtio'/>
    </interface>
    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
</domain>
`, e(s.Name), s.MemoryMiB, s.VCPUs, e(l.Kernel), e(l.Initrd), e(s.Args), e(emulator), diskType, srcAttr, e(src))
}

var vmName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// StartVM defines a persistent guest on host and starts it.
func (l *Lab) StartVM(ctx context.Context, host int, s VMSpec) error {
	if !vmName.MatchString(s.Name) {
		return fmt.Errorf("bad VM name %q", s.Name)
	}
	h, err := l.host(host)
	if err != nil {
		return err
	}
	c, err := l.connect(ctx, h)
	if err != nil {
		return err
	}
	defer c.Disconnect()
	// A fresh console log per boot, so that WaitConsole sees this boot only.
	os.Remove(l.ConsolePath(host, s.Name))
	detachLoops(ctx, l.DiskPath(s.Name)) // a crashed run's
	if err := makeDisk(l.DiskPath(s.Name), s.DiskMiB); err != nil {
		return err
	}
	dev, err := run(ctx, "losetup", "--find", "--show", "--direct-io=on", l.DiskPath(s.Name))
	if err != nil {
		return fmt.Errorf("%s: loop device for its disk: %w", s.Name, err)
	}
	dom, err := c.DomainDefineXML(l.domainXML(s, dev))
	if err != nil {
		return fmt.Errorf("define %s on %s: %w", s.Name, h.ID, err)
	}
	if err := c.DomainCreate(dom); err != nil {
		return fmt.Errorf("start %s on %s: %w (see %s)", s.Name, h.ID, err,
			filepath.Join(h.Dir, "log", "qemu", s.Name+".log"))
	}
	l.logf("started %s on %s", s.Name, h.ID)
	return nil
}

// DestroyVM stops and undefines a guest on whichever hosts know it.
func (l *Lab) DestroyVM(ctx context.Context, name string) error {
	var found bool
	for _, h := range l.Hosts {
		c, err := l.connect(ctx, h)
		if err != nil {
			return err
		}
		if dom, err := c.DomainLookupByName(name); err == nil {
			found = true
			c.DomainDestroy(dom) // fails harmlessly when it is not running
			c.DomainUndefine(dom)
		}
		c.Disconnect()
	}
	detachLoops(ctx, l.DiskPath(name))
	os.Remove(l.DiskPath(name))
	if !found {
		return fmt.Errorf("no guest %s in lab %s", name, l.Name)
	}
	return nil
}

// loopsOf lists the loop devices attached to the file at path.
func loopsOf(ctx context.Context, path string) []string {
	out, err := run(ctx, "losetup", "--noheadings", "--output", "NAME", "--associated", path)
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

func detachLoops(ctx context.Context, path string) {
	for _, dev := range loopsOf(ctx, path) {
		run(ctx, "losetup", "--detach", dev)
	}
}

// detachLoopsUnder detaches every loop device whose file lies under dir, also
// those whose file is deleted already: a lab's disks on its way down.
func detachLoopsUnder(ctx context.Context, dir string) {
	out, err := run(ctx, "losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE")
	if err != nil {
		return
	}
	for line := range strings.Lines(out) {
		dev, file, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && strings.HasPrefix(file, dir+"/") {
			run(ctx, "losetup", "--detach", dev)
		}
	}
}

// makeDisk creates a sparse disk image of mib MiB (default 64), empty each boot.
func makeDisk(path string, mib int) error {
	if mib <= 0 {
		mib = 64
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(mib) << 20); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (l *Lab) host(i int) (Host, error) {
	if i < 0 || i >= len(l.Hosts) {
		return Host{}, fmt.Errorf("no host %d (lab has %d)", i, len(l.Hosts))
	}
	return l.Hosts[i], nil
}

// ConsolePath is where host keeps the serial console of a guest it runs (or ran).
func (l *Lab) ConsolePath(host int, vm string) string {
	if host < 0 || host >= len(l.Hosts) {
		return ""
	}
	return filepath.Join(l.Hosts[host].Dir, "log", "qemu", vm+"-console.log")
}

// Console returns the guest's console output as logged on host.
func (l *Lab) Console(host int, vm string) (string, error) {
	b, err := os.ReadFile(l.ConsolePath(host, vm))
	return string(b), err
}

// ProgressLines returns the guest's "headroom-guest t=..." lines from host's log.
func (l *Lab) ProgressLines(host int, vm string) []string {
	s, _ := l.Console(host, vm)
	var out []string
	for line := range strings.Lines(s) {
		if !strings.HasSuffix(line, "\n") {
			break // the guest is still writing it: a cut line would read as a bad one
		}
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "headroom-guest t="); i >= 0 {
			out = append(out, line[i:])
		}
	}
	return out
}

// WaitProgress waits until host's console log of vm has at least n more progress
// lines than it had when called, and returns the last one.
func (l *Lab) WaitProgress(ctx context.Context, host int, vm string, n int, timeout time.Duration) (string, error) {
	start := len(l.ProgressLines(host, vm))
	deadline := time.Now().Add(timeout)
	for {
		lines := l.ProgressLines(host, vm)
		if len(lines) >= start+n {
			return lines[len(lines)-1], nil
		}
		if time.Now().After(deadline) {
			tail, _ := l.Console(host, vm)
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return "", fmt.Errorf("%s on host%d: %d new progress lines in %v, want %d; console tail:\n%s",
				vm, host, len(lines)-start, timeout, n, tail)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Steer sends one line of guest options (e.g. "cpu=0.9 dirty_rate=100") to vm's
// steering port on host, and returns the guest's reply.
func (l *Lab) Steer(ctx context.Context, host int, vm, line string) (string, error) {
	h, err := l.host(host)
	if err != nil {
		return "", err
	}
	sock := filepath.Join(h.Dir, "lib", "qemu", vm+".steer")
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return "", fmt.Errorf("steer %s on %s: %w", vm, h.ID, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", strings.TrimSpace(line)); err != nil {
		return "", err
	}
	r, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("steer %s: no reply: %w", vm, err)
	}
	r = strings.TrimSpace(r)
	if strings.HasPrefix(r, "error") {
		return r, fmt.Errorf("guest %s: %s", vm, r)
	}
	return r, nil
}

// DomainStatus is one guest as a host reports it.
type DomainStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// HostStatus is one host's daemon and guests.
type HostStatus struct {
	Host    Host           `json:"host"`
	URI     string         `json:"uri"`
	Err     string         `json:"error,omitempty"`
	Domains []DomainStatus `json:"domains"`
}

var stateNames = map[libvirt.DomainState]string{
	libvirt.DomainNostate:     "nostate",
	libvirt.DomainRunning:     "running",
	libvirt.DomainBlocked:     "blocked",
	libvirt.DomainPaused:      "paused",
	libvirt.DomainShutdown:    "shutdown",
	libvirt.DomainShutoff:     "shut off",
	libvirt.DomainCrashed:     "crashed",
	libvirt.DomainPmsuspended: "pmsuspended",
}

// Status asks every host for its guests.
func (l *Lab) Status(ctx context.Context) []HostStatus {
	out := make([]HostStatus, len(l.Hosts))
	for i, h := range l.Hosts {
		hs := HostStatus{Host: h, URI: h.URI()}
		c, err := l.connect(ctx, h)
		if err != nil {
			hs.Err = err.Error()
			out[i] = hs
			continue
		}
		doms, _, err := c.ConnectListAllDomains(1, 0)
		if err != nil {
			hs.Err = err.Error()
		}
		for _, d := range doms {
			st, _, err := c.DomainGetState(d, 0)
			name := stateNames[libvirt.DomainState(st)]
			if err != nil {
				name = "unknown: " + err.Error()
			}
			hs.Domains = append(hs.Domains, DomainStatus{Name: d.Name, State: name})
		}
		c.Disconnect()
		out[i] = hs
	}
	return out
}
