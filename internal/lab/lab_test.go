package lab

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

func TestMain(m *testing.M) { os.Exit(RunShared(m, 3)) }

// readCPIO parses a newc archive back into entries.
func readCPIO(t *testing.T, gz []byte) []cpioEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var out []cpioEntry
	hex := func(s string) uint32 {
		v, err := strconv.ParseUint(s, 16, 32)
		if err != nil {
			t.Fatalf("bad hex %q", s)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) uint32 { return hex(h[6+8*i : 14+8*i]) }
		mode, size, namesize := field(1), int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		off = align(off + 110 + namesize)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name: name, mode: mode, major: field(9), minor: field(10), data: b[off : off+size]})
		off = align(off + size)
	}
}

func TestInitramfs(t *testing.T) {
	var buf bytes.Buffer
	bin := []byte("\x7fELF pretend init, 31 bytes....")
	if err := guestInitramfs(&buf, bin); err != nil {
		t.Fatal(err)
	}
	ents := readCPIO(t, buf.Bytes())
	byName := map[string]cpioEntry{}
	for _, e := range ents {
		byName[e.name] = e
	}
	if e := byName["init"]; !bytes.Equal(e.data, bin) || e.mode != modeFile|0o755 {
		t.Fatalf("init = %+v", e)
	}
	if e := byName["dev/console"]; e.mode&0o170000 != modeChr || e.major != 5 || e.minor != 1 {
		t.Fatalf("dev/console = %+v", e)
	}
	for _, d := range []string{"dev", "proc", "sys"} {
		if byName[d].mode&0o170000 != modeDir {
			t.Fatalf("%s not a directory", d)
		}
	}
}

func TestDomainXML(t *testing.T) {
	l := &Lab{Kernel: "/k", Initrd: "/i"}
	x := l.DomainXML(VMSpec{Name: "vm0", Args: "headroom.cpu=0.5 a<b"})
	for _, want := range []string{
		"<domain type='qemu'>", "<memory unit='MiB'>128</memory>", "<kernel>/k</kernel>",
		"console=ttyS0", "headroom.cpu=0.5 a&lt;b", "vm0-console.log", "vm0.steer",
	} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %q:\n%s", want, x)
		}
	}
}

func TestUUID(t *testing.T) {
	u := newUUID()
	if len(u) != 36 || u[14] != '4' || !strings.ContainsRune("89ab", rune(u[19])) || u == newUUID() {
		t.Fatalf("bad uuid %s", u)
	}
}

// TestLab exercises the shared lab: hosts up and reachable, a guest boots and
// reports, steering changes its load, the unix URI works too.
func TestLab(t *testing.T) {
	l := Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if len(l.Hosts) != 3 {
		t.Fatalf("%d hosts", len(l.Hosts))
	}
	for _, hs := range l.Status(ctx) {
		if hs.Err != "" {
			t.Fatalf("%s: %s", hs.Host.ID, hs.Err)
		}
		if hs.URI != "qemu+tcp://"+hs.Host.Addr+"/system" {
			t.Fatalf("uri %s", hs.URI)
		}
	}

	l.BootVM(t, 1, VMSpec{Name: "labvm", Args: "headroom.cpu=0.2 headroom.dirty_mib=8 headroom.dirty_rate=5"})
	reply, err := l.Steer(ctx, 1, "labvm", "cpu=0.7 dirty_rate=10")
	if err != nil || !strings.HasPrefix(reply, "ok") {
		t.Fatalf("steer: %q %v", reply, err)
	}
	if _, err := l.Steer(ctx, 1, "labvm", "cpu=7"); err == nil {
		t.Fatal("steer accepted cpu=7")
	}
	// The guest's own measure follows the new target within a few seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		line, err := l.WaitProgress(ctx, 1, "labvm", 1, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "want=0.70") && !strings.Contains(line, "cpu=0.0") && !strings.Contains(line, "cpu=0.1") {
			t.Logf("steered: %s", line)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest did not follow steering: %s", line)
		}
	}

	st := l.Status(ctx)
	if len(st[1].Domains) != 1 || st[1].Domains[0] != (DomainStatus{"labvm", "running"}) {
		t.Fatalf("host1 domains %+v", st[1].Domains)
	}

	// The unix socket lives on the host's private /run, reached through
	// /proc/<libvirtd>/root.
	uri, err := l.Hosts[1].UnixURI()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	c := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(u.Query().Get("socket"))))
	if err := c.ConnectToURI(libvirt.QEMUSystem); err != nil {
		t.Fatalf("unix %s: %v", uri, err)
	}
	defer c.Disconnect()
	if _, err := c.DomainLookupByName("labvm"); err != nil {
		t.Fatalf("labvm over unix socket: %v", err)
	}
}

// TestUpDown makes its own lab, leaves it as a crash would, and checks the next Up
// removes the leftovers and Down removes everything.
func TestUpDown(t *testing.T) {
	if err := Check(Config{}); err != nil {
		skipOrFail(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := TestName() + "ud"
	release, err := lock(name)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	cfg := testConfig(name, 1, t)
	if _, err := Up(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := Up(ctx, cfg) // over the "crashed" first one
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartVM(ctx, 0, VMSpec{Name: "ud"}); err != nil {
		t.Fatal(err)
	}
	o, err := Open(name, "", nil)
	if err != nil || len(o.Hosts) != 1 || o.Hosts[0].UUID != l.Hosts[0].UUID {
		t.Fatalf("Open: %+v %v", o, err)
	}
	if err := Down(ctx, name, "", nil); err != nil {
		t.Fatal(err)
	}
	all, _ := netnsList(ctx)
	for _, ns := range all {
		if strings.HasPrefix(ns, name+"-") {
			t.Errorf("namespace %s left", ns)
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	if _, err := Open(name, "", nil); err == nil {
		t.Error("Open after Down succeeded")
	}
}

// TestGuestDevices: a guest started with its disk's loop device gets a virtio
// block device on it with cache=none (what libvirt migrates without copying), a
// virtio NIC on a tap and a balloon reporting every second; the initramfs holds
// the modules and their load order.
func TestGuestDevices(t *testing.T) {
	l := &Lab{Kernel: "/k", Initrd: "/i", Dir: "/lab"}
	x := l.domainXML(VMSpec{Name: "vm0"}, "/dev/loop7")
	for _, want := range []string{
		"<disk type='block' device='disk'>", "cache='none'", "<source dev='/dev/loop7'/>", "<target dev='vda' bus='virtio'/>",
		"<interface type='ethernet'>", "<model type='virtio'/>", "<memballoon model='virtio'>", "<stats period='1'/>",
	} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %q:\n%s", want, x)
		}
	}
	if x := l.domainXML(VMSpec{Name: "vm0"}, ""); !strings.Contains(x, "<source file='/lab/disks/vm0.img'/>") {
		t.Errorf("without a loop device the disk is not the image:\n%s", x)
	}
	var buf bytes.Buffer
	mods := []guestModule{{"virtio", []byte("a")}, {"virtio_net", []byte("b")}}
	if err := guestInitramfsModules(&buf, []byte("init"), mods); err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpioEntry{}
	for _, e := range readCPIO(t, buf.Bytes()) {
		byName[e.name] = e
	}
	if string(byName["modules/order"].data) != "virtio\nvirtio_net\n" || string(byName["modules/virtio_net.ko"].data) != "b" {
		t.Errorf("modules: order %q, virtio_net %q", byName["modules/order"].data, byName["modules/virtio_net.ko"].data)
	}
}
