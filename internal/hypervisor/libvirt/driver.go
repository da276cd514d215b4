// Package libvirt is the hypervisor.Driver for real hosts: it speaks libvirt's RPC
// protocol through go-libvirt (pure Go, no libvirt client library) to one libvirtd
// per host, over qemu+tcp://, qemu+tls:// or qemu+unix:// URIs.
//
// Migrations are peer-to-peer and live: the source libvirtd connects to the target
// itself (so the controller's connection only starts and watches the job), and QEMU
// streams memory to the target's migrate URI.
package libvirt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/model"
)

// HostConfig names one host.
type HostConfig struct {
	ID string
	// URI is how the controller reaches the host's libvirtd: qemu+tcp://addr[:port]/system,
	// qemu+tls://addr[:port]/system or qemu+unix:///system[?socket=path].
	URI string
	// PeerURI is how other hosts' libvirtd reach this one when it is a migration
	// target (the "dconnuri"). Default: URI, which must then be a network URI.
	PeerURI string
	// MigrateURI is where QEMU sends the migration stream, e.g. tcp://10.0.0.2.
	// Default: tcp://<host of PeerURI>.
	MigrateURI string
	// Capacity overrides what the host reports, field by field (0 keeps the
	// host's own figure): CPU is the host's total in cores x MHz, Mem in MiB; Net
	// and Disk (KB/s), which libvirt does not report, bind only when set. Lab
	// hosts share one machine, so each is given a share of it.
	Capacity model.Resources
	// Cores is how many cores Capacity.CPU is spread over, each Capacity.CPU/Cores
	// MHz; with no Capacity.CPU, Cores of the host's own. 0: cores at the host's
	// own clock, as many as Capacity.CPU needs (at least one, the last maybe a
	// part). A vCPU is worth one core, so a VM here is sized vCPUs x per-core MHz.
	Cores int
}

// Config configures the driver.
type Config struct {
	Hosts []HostConfig
	// Dial opens the network connection to a host; default net.Dialer. The lab
	// passes one that dials from inside its network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS is used for qemu+tls:// URIs (ServerName defaults to the URI's host).
	TLS *tls.Config
	// DialTimeout bounds connecting to a host; default 5 s.
	DialTimeout time.Duration
	// CallTimeout bounds one RPC (not a migration); default 30 s. A caller's
	// context bounds it further: the controller gives each cycle's reads a
	// deadline, so a silent host costs that, not this.
	CallTimeout time.Duration
	// Workers bounds how many hosts one call (Hosts, VMs, Stats, Locate) asks at
	// once; default 32. A hung host holds one worker until the caller's deadline
	// while the others serve the rest.
	Workers int
	// PollInterval is how often a migration's job stats are read; default 250 ms.
	PollInterval time.Duration
	// MinRateInterval is the shortest interval a rate is worked out over; default
	// 1 s. A Stats call sooner after the last measures from an earlier sample, so
	// a quick second caller cannot shrink an interval to a sliver where CPU-time
	// ticks (10 ms without cgroups) dominate.
	MinRateInterval time.Duration
	// ArrivalSettle is how long after an incoming migration a sample cannot be
	// the base of a rate; default 3 s. The new QEMU's first seconds carry the end
	// of the receive and, under TCG, a cold translation cache (0.8 of a core
	// read against 0.33 later in the lab).
	ArrivalSettle time.Duration
}

// Driver is a hypervisor.Driver over libvirt.
type Driver struct {
	cfg   Config
	hosts []*host

	mu     sync.Mutex
	prev   map[string][]sample // the bases of rates per host/VM, oldest first
	migs   map[string]*migration
	dirty  dirtyState
	closed bool
}

// host is one host's configuration and its shared connection.
type host struct {
	cfg HostConfig
	d   *Driver

	mu   sync.Mutex
	conn *lv.Libvirt
	nc   net.Conn // conn's socket: closing it unblocks every call on conn
	info *nodeInfo
	// silent is the error of the host's last call if it timed out or lost the
	// connection, nil once a call succeeds. Locate (and so Migrate) does not
	// wait on a silent host again; the cluster reads (Hosts, VMs, Stats) still
	// ask it, within their caller's deadline, and so notice when it is back.
	silent error
}

type nodeInfo struct {
	cpus     int
	mhz      float64
	memMiB   float64
	hostname string
}

// New checks the configuration; it connects lazily, so an unreachable host is
// reported by the calls that need it, not here.
func New(cfg Config) (*Driver, error) {
	if cfg.Dial == nil {
		var nd net.Dialer
		cfg.Dial = nd.DialContext
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.MinRateInterval <= 0 {
		cfg.MinRateInterval = time.Second
	}
	if cfg.ArrivalSettle <= 0 {
		cfg.ArrivalSettle = 3 * time.Second
	}
	d := &Driver{cfg: cfg, prev: map[string][]sample{}, migs: map[string]*migration{},
		dirty: dirtyState{doms: map[string]*dirtyDom{}, statsOff: map[string]time.Time{}}}
	seen := map[string]bool{}
	for _, hc := range cfg.Hosts {
		if hc.ID == "" || seen[hc.ID] {
			return nil, fmt.Errorf("host IDs must be unique and non-empty (%q)", hc.ID)
		}
		seen[hc.ID] = true
		if _, _, err := parseURI(hc.URI); err != nil {
			return nil, fmt.Errorf("host %s: %w", hc.ID, err)
		}
		if c := hc.Capacity; hc.Cores < 0 || c.CPU < 0 || c.Mem < 0 || c.Net < 0 || c.Disk < 0 {
			return nil, fmt.Errorf("host %s: capacity %+v and cores %d must not be negative", hc.ID, c, hc.Cores)
		}
		if hc.PeerURI == "" {
			hc.PeerURI = hc.URI
		}
		if hc.MigrateURI == "" {
			if u, err := url.Parse(hc.PeerURI); err == nil && u.Hostname() != "" {
				hc.MigrateURI = "tcp://" + u.Hostname()
			}
		}
		d.hosts = append(d.hosts, &host{cfg: hc, d: d})
	}
	return d, nil
}

// transport is how a URI is reached.
type transport struct {
	network, addr string // for net dial
	tls           bool
	serverName    string
}

// parseURI splits a libvirt URI into the connection to open and the URI to send to
// libvirtd once connected (which has no transport: qemu:///system).
func parseURI(s string) (transport, lv.ConnectURI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return transport{}, "", err
	}
	driver, tr, _ := strings.Cut(u.Scheme, "+")
	if driver != "qemu" {
		return transport{}, "", fmt.Errorf("unsupported URI %q: want qemu+tcp, qemu+tls or qemu+unix", s)
	}
	if tr == "" {
		tr = "unix"
		if u.Host != "" {
			tr = "tls" // as libvirt does for qemu://host/system
		}
	}
	var t transport
	switch tr {
	case "unix":
		t.network, t.addr = "unix", "/var/run/libvirt/libvirt-sock"
		if sock := u.Query().Get("socket"); sock != "" {
			t.addr = sock
		}
	case "tcp", "tls":
		if u.Hostname() == "" {
			return transport{}, "", fmt.Errorf("URI %q has no host", s)
		}
		port := u.Port()
		if port == "" {
			port = "16509"
			if tr == "tls" {
				port = "16514"
			}
		}
		t.network, t.addr = "tcp", net.JoinHostPort(u.Hostname(), port)
		t.tls, t.serverName = tr == "tls", u.Hostname()
	default:
		return transport{}, "", fmt.Errorf("unsupported transport %q in %q", tr, s)
	}
	return t, lv.RemoteURI(u), nil
}

// dial opens a new libvirt connection to uri, and returns its socket too.
func (d *Driver) dial(ctx context.Context, uri string) (*lv.Libvirt, net.Conn, error) {
	t, remote, err := parseURI(uri)
	if err != nil {
		return nil, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()
	nc, err := d.cfg.Dial(dctx, t.network, t.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", hypervisor.ErrUnreachable, err)
	}
	if t.tls {
		cfg := &tls.Config{}
		if d.cfg.TLS != nil {
			cfg = d.cfg.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = t.serverName
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("%w: tls: %v", hypervisor.ErrUnreachable, err)
		}
		nc = tc
	}
	c := lv.NewWithDialer(dialers.NewAlreadyConnected(nc))
	// The handshake is an RPC that a wedged peer may never answer.
	err = callCtx(dctx, func() { nc.Close() }, func() error { return c.ConnectToURI(remote) })
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%w: libvirt handshake: %v", hypervisor.ErrUnreachable, err)
	}
	return c, nc, nil
}

// callCtx runs fn, but returns when ctx ends, calling cancel to unblock fn (go-libvirt
// calls take no context; closing the connection fails them).
func callCtx(ctx context.Context, cancel func(), fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cancel()
		<-done
		return ctx.Err()
	}
}

// client returns the host's shared connection, reconnecting if it was lost.
func (h *host) client(ctx context.Context) (*lv.Libvirt, error) {
	c, _, err := h.clientConn(ctx)
	return c, err
}

func (h *host) clientConn(ctx context.Context) (*lv.Libvirt, net.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil && h.conn.IsConnected() {
		return h.conn, h.nc, nil
	}
	c, nc, err := h.d.dial(ctx, h.cfg.URI)
	if err != nil {
		err = h.err("connect", err)
		h.silent = err
		return nil, nil, err
	}
	h.conn, h.nc = c, nc
	return c, nc, nil
}

func (h *host) err(op string, err error) error {
	var he *hypervisor.HostError
	if errors.As(err, &he) {
		return err
	}
	return &hypervisor.HostError{Host: h.cfg.ID, URI: h.cfg.URI, Op: op, Err: err}
}

// call runs fn on the host's connection within the driver's call timeout. A call
// that times out drops the connection, failing fn; the next call reconnects.
func (h *host) call(ctx context.Context, op string, fn func(c *lv.Libvirt) error) error {
	c, nc, err := h.clientConn(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, h.d.cfg.CallTimeout)
	defer cancel()
	var closed atomic.Bool
	err = callCtx(cctx, func() { closed.Store(true); nc.Close() }, func() error { return fn(c) })
	// go-libvirt's socket answers EINVAL once it has seen its connection end,
	// while the client's IsConnected still says true until its own cleanup runs.
	dead := closed.Load() || errors.Is(err, syscall.EINVAL)
	if err != nil && (dead || !c.IsConnected() || hypervisor.IsConnectionError(err)) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, hypervisor.ErrUnreachable) {
		err = fmt.Errorf("%w: %v", hypervisor.ErrUnreachable, err)
	}
	h.mu.Lock()
	if dead && h.conn == c {
		// Forget the client now, so that the next call dials afresh instead of
		// failing on a dead one.
		h.conn, h.nc = nil, nil
	}
	switch {
	case err == nil:
		h.silent = nil
	case errors.Is(err, hypervisor.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		h.silent = h.err(op, err)
	}
	h.mu.Unlock()
	if err != nil {
		return h.err(op, err)
	}
	return nil
}

// silentErr is the host's error if its last call timed out or lost the
// connection (see host.silent).
func (h *host) silentErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.silent
}

func (h *host) nodeInfo(ctx context.Context) (*nodeInfo, error) {
	h.mu.Lock()
	ni := h.info
	h.mu.Unlock()
	if ni != nil {
		return ni, nil
	}
	ni = &nodeInfo{}
	err := h.call(ctx, "node info", func(c *lv.Libvirt) error {
		_, mem, cpus, mhz, _, _, _, _, err := c.NodeGetInfo()
		if err != nil {
			return err
		}
		ni.cpus, ni.mhz, ni.memMiB = int(cpus), float64(mhz), float64(mem)/1024
		if ni.mhz <= 0 {
			ni.mhz = 1000 // some virtual CPUs report no clock
		}
		ni.hostname, _ = c.ConnectGetHostname()
		return nil
	})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.info = ni
	h.mu.Unlock()
	return ni, nil
}

// shape is the host's capacity, its number of cores and their MHz, with the
// configured override applied (see HostConfig.Capacity and Cores).
func (h *host) shape(ni *nodeInfo) (capacity model.Resources, cores int, coreMHz float64) {
	o := h.cfg.Capacity
	capacity = model.Resources{CPU: float64(ni.cpus) * ni.mhz, Mem: ni.memMiB, Net: o.Net, Disk: o.Disk}
	cores, coreMHz = ni.cpus, ni.mhz
	if o.Mem > 0 {
		capacity.Mem = o.Mem
	}
	switch n := h.cfg.Cores; {
	case n > 0 && o.CPU > 0:
		capacity.CPU, cores, coreMHz = o.CPU, n, o.CPU/float64(n)
	case n > 0:
		capacity.CPU, cores = float64(n)*ni.mhz, n
	case o.CPU > 0:
		capacity.CPU, cores = o.CPU, max(1, int(math.Ceil(o.CPU/ni.mhz-1e-9)))
	}
	return capacity, cores, coreMHz
}

func (d *Driver) host(id string) (*host, error) {
	for _, h := range d.hosts {
		if h.cfg.ID == id {
			return h, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", hypervisor.ErrUnknownHost, id)
}

// eachHost runs fn on every host, up to Workers at once, and joins the errors.
func (d *Driver) eachHost(fn func(i int, h *host) error) error {
	errs := make([]error, len(d.hosts))
	sem := make(chan struct{}, d.cfg.Workers)
	var wg sync.WaitGroup
	for i, h := range d.hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(i, h)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Hosts implements hypervisor.Driver. Every host is asked, each time: its
// node info is kept from the first answer, so a host whose libvirtd died since
// would otherwise still be listed as up.
func (d *Driver) Hosts(ctx context.Context) ([]hypervisor.Host, error) {
	out := make([]hypervisor.Host, len(d.hosts))
	err := d.eachHost(func(i int, h *host) error {
		out[i] = hypervisor.Host{ID: h.cfg.ID, URI: h.cfg.URI}
		err := h.call(ctx, "probe", func(c *lv.Libvirt) error {
			_, err := c.ConnectGetLibVersion()
			return err
		})
		var ni *nodeInfo
		if err == nil {
			ni, err = h.nodeInfo(ctx)
		}
		if err != nil {
			out[i].Err = err.Error()
			return err
		}
		out[i].Hostname = ni.hostname
		out[i].Capacity, out[i].PEs, out[i].PEMIPS = h.shape(ni)
		return nil
	})
	return out, err
}

func stateOf(s int32) hypervisor.VMState {
	switch lv.DomainState(s) {
	case lv.DomainRunning, lv.DomainBlocked:
		return hypervisor.StateRunning
	case lv.DomainPaused, lv.DomainPmsuspended:
		return hypervisor.StatePaused
	case lv.DomainShutoff, lv.DomainCrashed, lv.DomainShutdown:
		return hypervisor.StateShutoff
	}
	return hypervisor.StateOther
}

func uuidString(u lv.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// VMs implements hypervisor.Driver.
func (d *Driver) VMs(ctx context.Context) ([]hypervisor.VM, error) {
	per := make([][]hypervisor.VM, len(d.hosts))
	err := d.eachHost(func(i int, h *host) error {
		ni, err := h.nodeInfo(ctx)
		if err != nil {
			return err
		}
		_, _, coreMHz := h.shape(ni)
		return h.call(ctx, "list vms", func(c *lv.Libvirt) error {
			doms, _, err := c.ConnectListAllDomains(1, lv.ConnectListDomainsActive)
			if err != nil {
				return err
			}
			for _, dom := range doms {
				st, maxKiB, _, ncpu, _, err := c.DomainGetInfo(dom)
				if lv.IsNotFound(err) {
					continue // went away (migrated) between the two calls
				}
				if err != nil {
					return err
				}
				pers, _ := c.DomainIsPersistent(dom)
				mem := float64(maxKiB) / 1024
				per[i] = append(per[i], hypervisor.VM{
					ID: dom.Name, UUID: uuidString(dom.UUID), Host: h.cfg.ID,
					State: stateOf(int32(st)), VCPUs: int(ncpu), MemMiB: mem,
					Size:       model.Resources{CPU: float64(ncpu) * coreMHz, Mem: mem},
					Persistent: pers == 1,
				})
			}
			return nil
		})
	})
	var out []hypervisor.VM
	for _, vs := range per {
		out = append(out, vs...)
	}
	return out, err
}

// Locate implements hypervisor.Driver.
func (d *Driver) Locate(ctx context.Context, vm string) (hypervisor.Location, error) {
	loc, _, err := d.locate(ctx, vm)
	return loc, err
}

// locate is Locate that also returns each host's error (nil if it answered).
func (d *Driver) locate(ctx context.Context, vm string) (hypervisor.Location, []error, error) {
	ids := make([]string, len(d.hosts))
	states := make([]hypervisor.VMState, len(d.hosts))
	errs := make([]error, len(d.hosts))
	d.eachHost(func(i int, h *host) error {
		ids[i], states[i] = h.cfg.ID, hypervisor.StateNotFound
		if errs[i] = h.silentErr(); errs[i] != nil {
			return errs[i] // it did not answer last time: no wait on it again
		}
		errs[i] = h.call(ctx, "locate", func(c *lv.Libvirt) error {
			dom, err := c.DomainLookupByName(vm)
			if lv.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			st, _, err := c.DomainGetState(dom, 0)
			if lv.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			states[i] = stateOf(st)
			return nil
		})
		return errs[i]
	})
	loc, err := locateFrom(vm, ids, states, errs)
	return loc, errs, err
}

// locateFrom works out where vm runs from each host's answer: states[i] from
// host ids[i], unless errs[i] says it could not be asked. A VM running on a host
// that answered is found whatever the others did; a paused copy alone is not
// conclusive while a host is silent, since in post-copy or at a migration's
// switch-over the running copy may be on the host that did not answer.
func locateFrom(vm string, ids []string, states []hypervisor.VMState, errs []error) (hypervisor.Location, error) {
	loc := hypervisor.Location{VM: vm, States: map[string]hypervisor.VMState{}}
	var running, active []string
	var silent []error
	for i, id := range ids {
		if errs[i] != nil {
			loc.Unreachable = append(loc.Unreachable, id)
			silent = append(silent, errs[i])
			continue
		}
		if states[i] == hypervisor.StateNotFound {
			continue
		}
		loc.States[id] = states[i]
		if states[i] == hypervisor.StateRunning {
			running = append(running, id)
		}
		if states[i].Active() {
			active = append(active, id)
		}
	}
	switch {
	case len(running) > 1:
		return loc, fmt.Errorf("%w: %s on %v", hypervisor.ErrSplitBrain, vm, running)
	case len(running) == 1:
		loc.Host = running[0]
	case len(silent) > 0:
		return loc, fmt.Errorf("%w: %s runs on no host that answered (states %v); not asked: %s: %w",
			hypervisor.ErrLocationUnknown, vm, loc.States, strings.Join(loc.Unreachable, ", "), errors.Join(silent...))
	case len(active) == 1:
		loc.Host = active[0] // paused, on one host only
	case len(loc.States) == 0:
		return loc, fmt.Errorf("%w: %s", hypervisor.ErrVMNotFound, vm)
	}
	return loc, nil
}

// Close implements hypervisor.Driver.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	for _, h := range d.hosts {
		h.mu.Lock()
		if h.conn != nil {
			h.conn.Disconnect()
			h.nc.Close()
			h.conn, h.nc = nil, nil
		}
		h.mu.Unlock()
	}
	return nil
}

var _ hypervisor.Driver = (*Driver)(nil)
