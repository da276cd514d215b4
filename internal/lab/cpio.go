package lab

import (
	"compress/gzip"
	"fmt"
	"io"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	name  string
	mode  uint32 // type and permission bits, as in stat(2)
	major uint32 // device number, for character devices
	minor uint32
	data  []byte
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChr  = 0o020000
)

// writeInitramfs writes a gzip-compressed "newc" cpio archive, the format the kernel
// unpacks into its rootfs. Writing it here avoids needing cpio(1) and root-owned
// device nodes on the build machine: the archive just says /dev/console is (5,1).
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	ino := uint32(1)
	for _, e := range entries {
		if err := writeCPIOHeader(zw, ino, e.name, e.mode, e.major, e.minor, len(e.data)); err != nil {
			return err
		}
		if _, err := zw.Write(e.data); err != nil {
			return err
		}
		if err := pad4(zw, len(e.data)); err != nil {
			return err
		}
		ino++
	}
	if err := writeCPIOHeader(zw, 0, "TRAILER!!!", 0, 0, 0, 0); err != nil {
		return err
	}
	return zw.Close()
}

func writeCPIOHeader(w io.Writer, ino uint32, name string, mode, major, minor uint32, size int) error {
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize, check: 13 eight-digit hex fields after the magic.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, major, minor, len(name)+1, 0)
	if _, err := io.WriteString(w, hdr+name+"\x00"); err != nil {
		return err
	}
	return pad4(w, len(hdr)+len(name)+1)
}

func pad4(w io.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// guestInitramfs lays out the guest's root: the init binary and the mount points and
// console node it needs before it has mounted devtmpfs.
func guestInitramfs(w io.Writer, initBin []byte) error {
	return guestInitramfsModules(w, initBin, nil)
}

// guestModule is a kernel module the guest's /init loads, in order.
type guestModule struct {
	name string // e.g. "virtio_net"
	data []byte // the .ko
}

// guestInitramfsModules is guestInitramfs with kernel modules under /modules, and
// /modules/order listing them in load order (dependencies first).
func guestInitramfsModules(w io.Writer, initBin []byte, mods []guestModule) error {
	entries := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChr | 0o600, major: 5, minor: 1},
		{name: "proc", mode: modeDir | 0o755},
		{name: "sys", mode: modeDir | 0o755},
		{name: "tmp", mode: modeDir | 0o1777},
		{name: "init", mode: modeFile | 0o755, data: initBin},
	}
	if len(mods) > 0 {
		var order []byte
		entries = append(entries, cpioEntry{name: "modules", mode: modeDir | 0o755})
		for _, m := range mods {
			entries = append(entries, cpioEntry{name: "modules/" + m.name + ".ko", mode: modeFile | 0o644, data: m.data})
			order = append(order, m.name+"\n"...)
		}
		entries = append(entries, cpioEntry{name: "modules/order", mode: modeFile | 0o644, data: order})
	}
	return writeInitramfs(w, entries)
}
