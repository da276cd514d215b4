package libvirt

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"
)

// fakeHost is a libvirtd for unit tests: it speaks libvirt's RPC protocol (over a
// pipe) for the calls Stats makes, and answers the all-domain stats call from a
// script, so that a test can say what a host reports and how long it takes.
type fakeHost struct {
	cpus int32
	mhz  int32
	// stats is asked for the domains when a stats call arrives, as libvirtd reads
	// its counters; the reply then waits delay, as a call held up by a job does.
	stats func() (doms []fakeDom, delay time.Duration)

	mu    sync.Mutex
	flags []uint32 // each stats call's flags
	down  bool     // refuses connections (its libvirtd died)
	conns []net.Conn
	// frozen, while open, holds every request unanswered, as a libvirtd
	// stopped with SIGSTOP does.
	frozen chan struct{}
}

// kill makes the host refuse connections and drops those open, as a libvirtd
// that died does.
func (f *fakeHost) kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// freeze holds every request until thaw, as SIGSTOP and SIGCONT do.
func (f *fakeHost) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = make(chan struct{})
}

func (f *fakeHost) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen != nil {
		close(f.frozen)
		f.frozen = nil
	}
}

func (f *fakeHost) wait() {
	f.mu.Lock()
	ch := f.frozen
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

type fakeDom struct {
	name   string
	id     int32
	params []lv.TypedParam
}

// fakeDial routes each host's libvirt port ("<id>:16509") to its fake; other
// addresses refuse.
func fakeDial(hosts map[string]*fakeHost) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		f := hosts[strings.TrimSuffix(addr, ":16509")]
		if f != nil {
			f.mu.Lock()
			if f.down {
				f = nil
			}
		}
		if f == nil {
			return nil, fmt.Errorf("dial %s %s: connection refused", network, addr)
		}
		srv, cli := net.Pipe()
		f.conns = append(f.conns, srv)
		f.mu.Unlock()
		go f.serve(srv)
		return cli, nil
	}
}

// Procedure numbers of libvirt's remote protocol.
const (
	procConnectOpen          = 1
	procConnectClose         = 2
	procNodeGetInfo          = 6
	procConnectGetHostname   = 59
	procAuthList             = 66
	procConnectGetAllDomStat = 344
	procConnectListAllDoms   = 273
	procDomainGetInfo        = 16
	procDomainIsPersistent   = 151
	procConnectGetLibVersion = 157
	procDomainLookupByName   = 23
	procDomainGetState       = 212
	remoteProgram            = 0x20008086
)

// fakeVCPUs is a domain's vcpu.current.
func (d fakeDom) vcpus() uint32 {
	for _, p := range d.params {
		if p.Field == "vcpu.current" {
			return p.Value.I.(uint32)
		}
	}
	return 1
}

func (f *fakeHost) serve(c net.Conn) {
	defer c.Close()
	for {
		var hdr [28]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[0:4])-28)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		proc := binary.BigEndian.Uint32(hdr[12:16])
		f.wait()
		var out xdrBuf
		status := uint32(0)
		switch proc {
		case procAuthList:
			out.u32(0) // no authentication
		case procConnectOpen, procConnectClose:
		case procNodeGetInfo:
			for range 32 {
				out.u32(0) // model: char[32], one XDR int each
			}
			out.u64(8 << 20) // KiB
			out.u32(uint32(f.cpus))
			out.u32(uint32(f.mhz))
			for range 4 {
				out.u32(1) // nodes, sockets, cores, threads
			}
		case procConnectGetHostname:
			out.str("fake")
		case procConnectGetAllDomStat:
			// doms<> (empty), stats, flags
			f.mu.Lock()
			f.flags = append(f.flags, binary.BigEndian.Uint32(body[8:12]))
			f.mu.Unlock()
			doms, delay := f.stats()
			time.Sleep(delay)
			out.u32(uint32(len(doms)))
			for _, d := range doms {
				out.dom(d)
				out.u32(uint32(len(d.params)))
				for _, p := range d.params {
					out.str(p.Field)
					out.param(p.Value)
				}
			}
		case procConnectListAllDoms:
			doms, _ := f.stats()
			out.u32(uint32(len(doms)))
			for _, d := range doms {
				out.dom(d)
			}
			out.u32(uint32(len(doms)))
		case procDomainGetInfo:
			name := string(body[4 : 4+binary.BigEndian.Uint32(body[0:4])])
			doms, _ := f.stats()
			for _, d := range doms {
				if d.name == name {
					out.u32(1)           // running
					out.u64(131072)      // max KiB
					out.u64(131072)      // KiB
					out.u32(d.vcpus())   // vCPUs
					out.u64(uint64(1e9)) // CPU time
				}
			}
		case procDomainIsPersistent:
			out.u32(1)
		case procConnectGetLibVersion:
			out.u64(9_000_000)
		case procDomainLookupByName:
			name := string(body[4 : 4+binary.BigEndian.Uint32(body[0:4])])
			doms, _ := f.stats()
			found := false
			for _, d := range doms {
				if d.name == name {
					out.dom(d)
					found = true
				}
			}
			if !found {
				status = 1
				out.u32(uint32(lv.ErrNoDomain))
				out.u32(0)
				out.u32(1)
				out.str("Domain not found: no domain with matching name '" + name + "'")
				out.u32(2)
			}
		case procDomainGetState:
			out.u32(1) // running
			out.u32(0)
		default:
			status = 1
			out.u32(uint32(lv.ErrNoSupport))
			out.u32(0)
			out.u32(1) // message present
			out.str(fmt.Sprintf("fake libvirtd: unknown procedure %d", proc))
			out.u32(2)
		}
		var rep xdrBuf
		rep.u32(uint32(28 + len(out.b)))
		rep.u32(remoteProgram)
		rep.u32(1)
		rep.u32(proc)
		rep.u32(1) // reply
		rep.b = append(rep.b, hdr[20:24]...)
		rep.u32(status)
		rep.b = append(rep.b, out.b...)
		if _, err := c.Write(rep.b); err != nil {
			return
		}
	}
}

// statsFlagsSeen returns the flags of every stats call so far.
func (f *fakeHost) statsFlagsSeen() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.flags...)
}

// xdrBuf builds XDR: big-endian 4-byte units, strings padded to 4.
type xdrBuf struct{ b []byte }

func (x *xdrBuf) u32(v uint32) { x.b = binary.BigEndian.AppendUint32(x.b, v) }
func (x *xdrBuf) u64(v uint64) { x.b = binary.BigEndian.AppendUint64(x.b, v) }
func (x *xdrBuf) str(s string) {
	x.u32(uint32(len(s)))
	x.b = append(x.b, s...)
	x.b = append(x.b, make([]byte, (4-len(s)%4)%4)...)
}

func (x *xdrBuf) dom(d fakeDom) {
	x.str(d.name)
	x.b = append(x.b, make([]byte, 16)...) // uuid
	x.u32(uint32(d.id))
}

func (x *xdrBuf) param(v lv.TypedParamValue) {
	switch i := v.I.(type) {
	case int32:
		x.u32(1)
		x.u32(uint32(i))
	case uint32:
		x.u32(2)
		x.u32(i)
	case int64:
		x.u32(3)
		x.u64(uint64(i))
	case uint64:
		x.u32(4)
		x.u64(i)
	case float64:
		x.u32(5)
		x.u64(math.Float64bits(i))
	case string:
		x.u32(7)
		x.str(i)
	default:
		panic(fmt.Sprintf("fake libvirtd: typed param %T", v.I))
	}
}

// domStats are a domain's stats as libvirt names them: state (1 running, 3
// paused), cumulative CPU time and vCPUs.
func domStats(state int32, cpu time.Duration, vcpus uint32) []lv.TypedParam {
	return []lv.TypedParam{
		tp("state.state", state), tp("state.reason", int32(0)), tp("cpu.time", uint64(cpu)),
		tp("vcpu.current", vcpus), tp("balloon.current", uint64(131072)),
	}
}
