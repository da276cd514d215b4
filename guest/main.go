// Command guest is the /init of headroom's lab guests: a static program that replays a
// CPU and memory-dirtying trace and prints its progress to the serial console once a
// second, so that a migration's effect on the guest can be read from the host.
//
// The trace comes from the kernel command line:
//
//	headroom.cpu=0.2,0.2,0.9,0.9 headroom.step=10s headroom.dirty_mib=32 headroom.dirty_rate=50
//	headroom.mem_mib=16,64,128 headroom.disk_kbps=0,512 headroom.net_kbps=256
//
// (dirty_rate, mem_mib, disk_kbps and net_kbps may also be lists, one value per
// step; headroom.loop=0 holds the last step). mem_mib is memory held allocated and
// touched; disk_kbps is written to the virtio disk (O_DIRECT) and net_kbps sent as
// raw frames on the virtio NIC, whose drivers it loads from /modules. Missing keys take DefaultTrace's values. While running, lines of the same
// key=value options written to the second serial port (/dev/ttyS1) replace the trace
// without a reboot; "status" asks for a progress line there.
//
// Outside a VM (pid != 1) it reads the options from its arguments, which is how its
// tests and a quick look on the host run it.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	pid1 := os.Getpid() == 1
	if pid1 {
		defer hang() // init must never exit: that panics the kernel, hiding our message
		mountAll()
		loadModules("/modules")
	}

	var cmdline string
	if pid1 {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			say("headroom-guest error: %v", err)
		}
		cmdline = string(b)
	} else {
		cmdline = strings.Join(os.Args[1:], " ")
	}
	tr, errs := ParseCmdline(cmdline, DefaultTrace())
	for _, err := range errs {
		say("headroom-guest error: %v", err)
	}
	born := time.Now()
	eng := NewEngine(tr, born)
	say("headroom-guest start cpu=%v step=%v dirty_mib=%d dirty_rate=%v loop=%v mem_mib=%v disk_kbps=%v net_kbps=%v",
		tr.CPU, tr.Step, tr.DirtyMiB, tr.DirtyRate, tr.Loop, tr.MemMiB, tr.DiskKBps, tr.NetKBps)
	go eng.memory(&eng.io)
	if pid1 { // on a host, never its disks or NICs
		go eng.disk(&eng.io, "/dev/vda")
		go eng.network(&eng.io)
	}

	port := "/dev/ttyS1"
	if f := flagValue(cmdline, "headroom.steer"); f != "" {
		port = f
	}
	if pid1 || flagValue(cmdline, "headroom.steer") != "" {
		go steer(eng, port, born)
	}
	go progress(eng, born)

	for {
		eng.Slice(time.Now(), time.Now, time.Sleep)
	}
}

// say prints one line to the console. Lines start with "headroom-guest" so the host
// can pick them out of kernel messages.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\r\n", args...)
}

func progress(eng *Engine, born time.Time) {
	prev, last := eng.Counters(), time.Now()
	for {
		time.Sleep(time.Second)
		now := time.Now()
		say("headroom-guest t=%.1fs %s", now.Sub(born).Seconds(), eng.Status(now, prev, now.Sub(last)))
		prev, last = eng.Counters(), now
	}
}

// steer reads key=value lines from a serial port and applies them to the trace.
func steer(eng *Engine, port string, born time.Time) {
	f, err := os.OpenFile(port, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		say("headroom-guest steer: %v", err)
		return
	}
	makeRaw(f)
	reply := func(format string, args ...any) { fmt.Fprintf(f, format+"\n", args...) }
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if line == "status" {
			now := time.Now()
			reply("headroom-guest t=%.1fs %s", now.Sub(born).Seconds(), eng.Status(now, eng.Counters(), 0))
			continue
		}
		tr := eng.Trace()
		var bad error
		for _, kv := range strings.Fields(line) {
			if err := tr.Apply(kv); err != nil {
				bad = err
				break
			}
		}
		if bad != nil {
			reply("error %v", bad)
			say("headroom-guest steer error: %v", bad)
			continue
		}
		eng.Set(tr, time.Now())
		reply("ok %s", line)
		say("headroom-guest steer ok: %s", line)
	}
	say("headroom-guest steer: %v", sc.Err())
}

// makeRaw turns off echo and line editing so commands and replies pass unchanged.
func makeRaw(f *os.File) {
	var t syscall.Termios
	fd := f.Fd()
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t))); e != 0 {
		return // not a tty (a pipe in tests): nothing to do
	}
	t.Iflag &^= syscall.IGNBRK | syscall.BRKINT | syscall.PARMRK | syscall.ISTRIP | syscall.INLCR | syscall.IGNCR | syscall.ICRNL | syscall.IXON
	t.Oflag &^= syscall.OPOST
	t.Lflag &^= syscall.ECHO | syscall.ECHONL | syscall.ICANON | syscall.ISIG | syscall.IEXTEN
	t.Cflag &^= syscall.CSIZE | syscall.PARENB
	t.Cflag |= syscall.CS8
	t.Cc[syscall.VMIN] = 1
	t.Cc[syscall.VTIME] = 0
	syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCSETS, uintptr(unsafe.Pointer(&t)))
}

func flagValue(cmdline, key string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func mountAll() {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := syscall.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			say("headroom-guest mount %s: %v", m.dst, err)
		}
	}
}

func hang() {
	if r := recover(); r != nil {
		say("headroom-guest panic: %v", r)
	}
	for {
		time.Sleep(time.Hour)
	}
}
