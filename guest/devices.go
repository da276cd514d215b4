package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The guest's memory, disk and network load: each runs in its own goroutine and
// follows the trace's level every slice, so the host sees it through libvirt's
// balloon, block and interface stats.

// ioCounters are what the memory, disk and network workers did so far.
type ioCounters struct {
	memMiB  atomic.Int64 // held now
	diskB   atomic.Int64 // bytes written to the disk
	netB    atomic.Int64 // bytes of frames sent
	ioErrs  atomic.Int64
	lastErr atomic.Value // string
}

func (c *ioCounters) fail(what string, err error) {
	if c.ioErrs.Add(1) == 1 {
		say("headroom-guest %s: %v", what, err)
	}
	c.lastErr.Store(what + ": " + err.Error())
}

// levels returns the trace's levels now.
func (e *Engine) levels(now time.Time) Levels {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tr.LevelsAt(now.Sub(e.start))
}

// loadModules loads dir's kernel modules in the order dir/order lists them: the
// virtio PCI, NIC, disk and balloon drivers, which the Debian kernel builds as
// modules. No directory: nothing to load.
func loadModules(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return
	}
	for _, name := range strings.Fields(string(b)) {
		img, err := os.ReadFile(filepath.Join(dir, name+".ko"))
		if err == nil {
			err = unix.InitModule(img, "")
		}
		if err != nil && err != unix.EEXIST {
			say("headroom-guest module %s: %v", name, err)
		}
	}
}

// memory holds the trace's MemMiB allocated, each page touched so the guest
// kernel backs it: the guest's used memory, as its balloon driver reports it.
func (e *Engine) memory(c *ioCounters) {
	var chunks [][]byte // 1 MiB each, mapped apart so that shrinking returns them
	for {
		want := int(e.levels(time.Now()).MemMiB)
		for len(chunks) < want {
			b, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				c.fail("memory", err)
				break
			}
			for i := 0; i < len(b); i += pageSize {
				// Not zero: a zero page costs a migration nothing.
				binary.LittleEndian.PutUint64(b[i:], uint64(len(chunks)<<20+i)|1)
			}
			chunks = append(chunks, b)
		}
		for len(chunks) > want {
			unix.Munmap(chunks[len(chunks)-1])
			chunks = chunks[:len(chunks)-1]
		}
		c.memMiB.Store(int64(len(chunks)))
		time.Sleep(slice)
	}
}

// pacer turns a rate into whole blocks per slice, carrying the remainder and at
// most a second's backlog (a stalled device does not burst afterwards).
type pacer struct {
	due  float64 // bytes owed
	last time.Time
}

func (p *pacer) blocks(now time.Time, kbps float64, block int) int {
	if p.last.IsZero() {
		p.last = now
	}
	dt := now.Sub(p.last).Seconds()
	p.last = now
	p.due = min(p.due+kbps*1024*max(dt, 0), kbps*1024+float64(block))
	if kbps <= 0 {
		p.due = 0
	}
	n := int(p.due / float64(block))
	p.due -= float64(n * block)
	return n
}

// waitFor waits up to d for path to exist (devices appear once their module has
// probed them).
func waitFor(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		_, err := os.Stat(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const diskBlock = 64 << 10

// disk writes the trace's DiskKBps to the first virtio disk with O_DIRECT, going
// round it, so every byte reaches the host instead of the guest's page cache.
func (e *Engine) disk(c *ioCounters, dev string) {
	var f *os.File
	var size int64
	var buf []byte
	var p pacer
	var off int64
	for {
		time.Sleep(slice)
		n := p.blocks(time.Now(), e.levels(time.Now()).DiskKBps, diskBlock)
		if n == 0 {
			continue
		}
		if f == nil {
			if err := waitFor(dev, 10*time.Second); err != nil {
				c.fail("disk", err)
				time.Sleep(5 * time.Second)
				continue
			}
			fd, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
			if err != nil {
				c.fail("disk", err)
				time.Sleep(5 * time.Second)
				continue
			}
			size, err = fd.Seek(0, 2)
			if err != nil || size < diskBlock {
				c.fail("disk", fmt.Errorf("%s: size %d: %v", dev, size, err))
				fd.Close()
				time.Sleep(5 * time.Second)
				continue
			}
			// O_DIRECT wants an aligned buffer: a mapping is page-aligned.
			if buf, err = unix.Mmap(-1, 0, diskBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
				c.fail("disk", err)
				fd.Close()
				continue
			}
			for i := range buf {
				buf[i] = byte(i*7 + 1)
			}
			f = fd
		}
		for range n {
			if off+diskBlock > size {
				off = 0
			}
			binary.LittleEndian.PutUint64(buf, uint64(off))
			if _, err := f.WriteAt(buf, off); err != nil {
				c.fail("disk", err)
				break
			}
			off += diskBlock
			c.diskB.Add(diskBlock)
		}
	}
}

const frameLen = 1514 // a full Ethernet frame at the default MTU

// network sends the trace's NetKBps as raw Ethernet frames (a local experimental
// EtherType, broadcast) on the first NIC. They end at the tap in the host's
// namespace, whose counters are libvirt's interface stats; the host's stack drops
// them, so nothing leaves the host's namespace.
func (e *Engine) network(c *ioCounters) {
	var fd = -1
	var to unix.SockaddrLinklayer
	frame := make([]byte, frameLen)
	var p pacer
	for {
		time.Sleep(slice)
		n := p.blocks(time.Now(), e.levels(time.Now()).NetKBps, frameLen)
		if n == 0 {
			continue
		}
		if fd < 0 {
			ifc, err := upNIC(10 * time.Second)
			if err != nil {
				c.fail("network", err)
				time.Sleep(5 * time.Second)
				continue
			}
			s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
			if err != nil {
				c.fail("network", err)
				time.Sleep(5 * time.Second)
				continue
			}
			fd = s
			to = unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
			copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			copy(frame[0:6], to.Addr[:6])
			copy(frame[6:12], ifc.HardwareAddr)
			binary.BigEndian.PutUint16(frame[12:], 0x88b5)
		}
		for range n {
			if err := unix.Sendto(fd, frame, 0, &to); err != nil {
				if err == unix.ENOBUFS || err == unix.EAGAIN {
					break // the queue is full: the NIC's limit, not an error
				}
				c.fail("network", err)
				break
			}
			c.netB.Add(frameLen)
		}
	}
}

// upNIC waits for the first network interface other than loopback and brings
// it up.
func upNIC(wait time.Duration) (*net.Interface, error) {
	deadline := time.Now().Add(wait)
	for {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			if err := ifUp(ifc.Name); err != nil {
				return nil, fmt.Errorf("%s up: %w", ifc.Name, err)
			}
			return &ifc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no network interface after %v", wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ifUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}
