package forecast

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"sort"
)

// A snapshot is every VM's whole forecasting state: history, the blend's
// components and weights, and the calibration, so that an engine loaded from
// it forecasts exactly what the saved one would have. Layout, little-endian:
//
//	magic "HRFCSNP2", the config fingerprint (see fingerprint), the fleet's
//	prior (per resource, step group and component: its sums of r and r^2
//	and count, three float64s), VM count u32, per VM: id (u16 length, bytes), a resource mask
//	u8, and per resource in the mask: total samples i64, the blend's scalar
//	state (stateFields), the slab (float32s, length fixed by the config), the
//	held samples oldest first; last a CRC-32 (IEEE) of everything before it.
//
// A snapshot of the first format, "HRFCSNP1", is the same without the prior:
// it still loads, and the prior is learnt again from the next batch on.
//
// The decoder trusts nothing: lengths are checked against what is left,
// indexes against the config, and state that could make a later update index
// out of range is rejected, so a corrupt file is an error, never a panic.
const (
	snapMagic   = "HRFCSNP2"
	snapMagicV1 = "HRFCSNP1" // without the prior
)

// ErrSnapshot is wrapped by every error that means the snapshot is unusable
// (corrupt, truncated, or made with another configuration).
var ErrSnapshot = errors.New("forecast snapshot unusable")

// codec visits a Series' scalar state, to write or to read it, so that the
// two cannot disagree on the order.
type codec interface {
	i64(*int64)
	i32(*int32)
	u16(*uint16)
	f32(*float32)
	f64(*float64)
	flag(*bool)
}

func (s *Series) stateFields(c codec) {
	c.i64(&s.hist.total)
	c.i32(&s.row)
	c.f32(&s.scale)
	c.f32(&s.wsum)
	b := &s.def
	c.i32(&b.row)
	c.i32(&b.nw)
	for i := range b.blk {
		c.f32(&b.blk[i])
	}
	for i := range b.s3 {
		c.f32(&b.s3[i])
	}
	for i := range b.s7 {
		c.f32(&b.s7[i])
	}
	c.i32(&b.nblk)
	c.u16(&b.live)
	c.flag(&b.neg)
	c.i32(&b.meanAge)
	c.f64(&b.meanSum)
	hs := &b.holt
	c.f32(&hs.alpha)
	c.f32(&hs.beta)
	c.f32(&hs.phi)
	c.f32(&hs.l)
	c.f32(&hs.b)
	c.flag(&hs.init)
	b.extraFields(c)
}

type encoder struct {
	w   *bufio.Writer
	buf [8]byte
}

func (e *encoder) u64(v uint64, n int) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.w.Write(e.buf[:n])
}
func (e *encoder) i64(p *int64)   { e.u64(uint64(*p), 8) }
func (e *encoder) i32(p *int32)   { e.u64(uint64(uint32(*p)), 4) }
func (e *encoder) u16(p *uint16)  { e.u64(uint64(*p), 2) }
func (e *encoder) f32(p *float32) { e.u64(uint64(math.Float32bits(*p)), 4) }
func (e *encoder) f64(p *float64) { e.u64(math.Float64bits(*p), 8) }
func (e *encoder) flag(p *bool) {
	var v uint64
	if *p {
		v = 1
	}
	e.u64(v, 1)
}
func (e *encoder) f32s(v []float32) {
	for i := range v {
		e.f32(&v[i])
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated", ErrSnapshot)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u(n int) uint64 {
	b := d.take(n)
	if b == nil {
		return 0
	}
	var buf [8]byte
	copy(buf[:], b)
	return binary.LittleEndian.Uint64(buf[:])
}
func (d *decoder) i64(p *int64)   { *p = int64(d.u(8)) }
func (d *decoder) i32(p *int32)   { *p = int32(uint32(d.u(4))) }
func (d *decoder) u16(p *uint16)  { *p = uint16(d.u(2)) }
func (d *decoder) f32(p *float32) { *p = math.Float32frombits(uint32(d.u(4))) }
func (d *decoder) f64(p *float64) { *p = math.Float64frombits(d.u(8)) }
func (d *decoder) flag(p *bool) {
	v := d.u(1)
	if v > 1 && d.err == nil {
		d.err = fmt.Errorf("%w: flag byte %d", ErrSnapshot, v)
	}
	*p = v == 1
}
func (d *decoder) f32s(v []float32) {
	b := d.take(4 * len(v))
	if b == nil {
		return
	}
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// fingerprint is what must match between the saving and the loading engine.
func (sh *shared) fingerprint(c codec) {
	p := sh.params
	c.f64(&p.Step)
	h := int32(p.Horizon)
	c.i32(&h)
	c.f64(&p.Day)
	capy := int32(sh.cap)
	c.i32(&capy)
	c.f32(&sh.lr)
	nl := int32(len(sh.levels))
	c.i32(&nl)
	slab := int32(sh.slabLen())
	c.i32(&slab)
}

func (sh *shared) slabLen() int {
	h := sh.params.Horizon
	n := h*h + h + len(sh.levels)*h + len(probLevels)*h
	if sh.spec.Name == DefaultModel {
		n += blendSlabLen(h)
	}
	return n
}

// Save writes a snapshot of every VM's state (see snapMagic) to w. Each VM is
// consistent in itself; observations of other VMs may run meanwhile. Only the
// default model's state can be saved.
func (e *Engine) Save(w io.Writer) error {
	if e.sh.spec.Name != DefaultModel {
		return fmt.Errorf("forecast: snapshots hold the %s model only, not %s", DefaultModel, e.sh.spec.Name)
	}
	e.mu.RLock()
	vms := make([]*VM, 0, len(e.ids))
	for _, v := range e.ids {
		vms = append(vms, v)
	}
	e.mu.RUnlock()
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })

	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<16)
	enc := &encoder{w: bw}
	bw.WriteString(snapMagic)
	e.sh.fingerprint(enc)
	e.poolFields(enc)
	var hist []float32
	// The VM count comes first, but a VM may be removed meanwhile: write the
	// removed ones as VMs without resources rather than count twice.
	n := uint64(len(vms))
	enc.u64(n, 4)
	for _, v := range vms {
		if len(v.ID) > maxIDLen {
			return fmt.Errorf("forecast: VM ID of %d bytes is too long to save", len(v.ID))
		}
		v.mu.Lock()
		var mask uint8
		for r, s := range v.res {
			if s != nil && !v.removed && s.hist.total > 0 {
				mask |= 1 << r
			}
		}
		enc.u64(uint64(len(v.ID)), 2)
		bw.WriteString(v.ID)
		enc.u64(uint64(mask), 1)
		for r, s := range v.res {
			if mask&(1<<r) == 0 {
				continue
			}
			s.stateFields(enc)
			enc.f32s(s.slab)
			hist = hist[:0]
			for i := s.hist.Len() - 1; i >= 0; i-- {
				hist = append(hist, s.hist.At(i))
			}
			enc.f32s(hist)
		}
		v.mu.Unlock()
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	_, err := w.Write(sum[:])
	return err
}

const maxIDLen = 4096

// Load reads a snapshot written by Save from an engine of the same
// configuration. Each VM in it replaces the state of the VM of that ID
// (handles stay valid); other VMs are kept. On any error nothing changes,
// and the error wraps ErrSnapshot when the snapshot itself is at fault.
func (e *Engine) Load(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) < len(snapMagic)+4 {
		return fmt.Errorf("%w: %d bytes is too short", ErrSnapshot, len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return fmt.Errorf("%w: checksum mismatch (corrupt or truncated)", ErrSnapshot)
	}
	return e.decode(body)
}

type loaded struct {
	id  string
	res [4]*Series
}

func (e *Engine) decode(body []byte) error {
	if e.sh.spec.Name != DefaultModel {
		return fmt.Errorf("forecast: snapshots hold the %s model only, not %s", DefaultModel, e.sh.spec.Name)
	}
	v1 := bytes.HasPrefix(body, []byte(snapMagicV1))
	if !v1 && !bytes.HasPrefix(body, []byte(snapMagic)) {
		return fmt.Errorf("%w: not a forecast snapshot (bad magic)", ErrSnapshot)
	}
	d := &decoder{b: body[len(snapMagic):]}
	// The fingerprint is compared by encoding ours the same way.
	var want bytes.Buffer
	bw := bufio.NewWriter(&want)
	e.sh.fingerprint(&encoder{w: bw})
	bw.Flush()
	if got := d.take(want.Len()); d.err != nil || !bytes.Equal(got, want.Bytes()) {
		return fmt.Errorf("%w: made by an engine of another configuration (step, horizon, day, history, levels or learning rate differ)", ErrSnapshot)
	}
	var pl *pool
	if !v1 {
		pl = &pool{}
		pl.fields(d, e.sh.params.Horizon)
		if d.err == nil && !validPool(&pl.sum, &pl.sq, &pl.cnt) {
			d.err = fmt.Errorf("%w: the fleet's prior is out of range", ErrSnapshot)
		}
	}
	n := int(d.u(4))
	if d.err == nil && n > len(d.b)/3 { // a VM takes at least 3 bytes
		d.err = fmt.Errorf("%w: %d VMs in %d bytes", ErrSnapshot, n, len(d.b))
	}
	var out []loaded
	release := func() {
		for _, l := range out {
			for _, s := range l.res {
				if s != nil {
					e.rings.put(s.hist.buf)
				}
			}
		}
	}
	seen := map[string]bool{}
	for i := 0; i < n && d.err == nil; i++ {
		idLen := int(d.u(2))
		id := string(d.take(idLen))
		mask := uint8(d.u(1))
		if d.err != nil {
			break
		}
		if mask >= 1<<len(loaded{}.res) || seen[id] {
			d.err = fmt.Errorf("%w: VM %q: bad resource mask or repeated", ErrSnapshot, id)
			break
		}
		seen[id] = true
		l := loaded{id: id}
		for r := range l.res {
			if mask&(1<<r) == 0 {
				continue
			}
			s, err := e.decodeSeries(d)
			if err != nil {
				d.err = fmt.Errorf("%w: VM %q resource %d: %v", ErrSnapshot, id, r, err)
				break
			}
			s.res = uint8(r)
			l.res[r] = s
		}
		out = append(out, l)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d bytes after the last VM", ErrSnapshot, len(d.b))
	}
	if d.err != nil {
		release()
		return d.err
	}
	if pl != nil && e.sh.pool != nil {
		e.sh.pool.load(pl)
	}
	for _, l := range out {
		if l.res == [4]*Series{} {
			continue
		}
		v := e.VM(l.id)
		v.mu.Lock()
		if v.removed { // removed between VM() and here: drop it
			v.mu.Unlock()
			for _, s := range l.res {
				if s != nil {
					e.rings.put(s.hist.buf)
				}
			}
			continue
		}
		for r, s := range l.res {
			if old := v.res[r]; old != nil {
				e.rings.put(old.hist.buf)
			}
			v.res[r] = s
		}
		v.mu.Unlock()
	}
	return nil
}

// decodeSeries reads one Series and checks that its state is one an engine
// of this configuration could have reached.
func (e *Engine) decodeSeries(d *decoder) (*Series, error) {
	sh := e.sh
	ring := e.rings.get()
	s := newSeries(sh, ring)
	fail := func(format string, a ...any) (*Series, error) {
		e.rings.put(ring)
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf(format, a...)
	}
	s.stateFields(d)
	if d.err != nil {
		return fail("")
	}
	h := int64(sh.params.Horizon)
	total := s.hist.total
	if total < 1 {
		return fail("%d samples", total)
	}
	held := int(min(total, int64(sh.cap)))
	if held*4 > len(d.b) {
		return fail("truncated")
	}
	row := int32((total - 1) % h)
	b := &s.def
	if s.row != row || b.row != row {
		return fail("origin row %d/%d, want %d", s.row, b.row, row)
	}
	if b.nw != int32(min(held, win24)) || b.nblk < 0 || int(b.nblk) > len(b.blk) || b.meanAge < 0 || b.meanAge >= 4096 {
		return fail("window state out of range")
	}
	if b.live&^(1<<nComp-1) != 0 {
		return fail("unknown components %#x", b.live)
	}
	for _, c := range [...]struct {
		bit    int
		period int32
	}{{cDay, b.day}, {cWeek, b.week}} {
		if b.live&(1<<c.bit) != 0 && !(c.period > b.h && int(c.period) < held) {
			return fail("seasonal component without the history it needs")
		}
	}
	if err := b.checkExtra(held); err != nil {
		return fail("%v", err)
	}
	d.f32s(s.slab)
	xs := make([]float32, held)
	d.f32s(xs)
	if d.err != nil {
		return fail("")
	}
	for _, x := range xs {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fail("non-finite sample")
		}
	}
	// Samples are saved as float32 whatever the history's width, so a
	// snapshot of either loads into either; into 16 bits they are rounded
	// here (a no-op for one saved from 16 bits).
	s.hist.fill(xs, total)
	// The sorted window is derived from the history: rebuild it rather than
	// trust it, since later updates search it for samples that leave.
	win, _, _, _ := b.parts()
	w := win[:b.nw]
	for i := range w {
		w[i] = s.hist.At(i)
	}
	slices.Sort(w)
	return s, nil
}

// poolFields visits the Engine's prior for a snapshot.
func (e *Engine) poolFields(c codec) {
	pl := e.sh.pool
	if pl == nil { // not the default model: Save refuses it anyway
		pl = &pool{}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.fields(c, e.sh.params.Horizon)
}

// fields visits the sums of the step groups a horizon of h has.
func (pl *pool) fields(c codec, h int) {
	for r := range pl.sum {
		for g := range groups(max(h, 1)) {
			for k := range pl.sum[r][g] {
				c.f64(&pl.sum[r][g][k])
				c.f64(&pl.sq[r][g][k])
				c.f64(&pl.cnt[r][g][k])
			}
		}
	}
}

// load replaces the prior's sums with src's and publishes them.
func (pl *pool) load(src *pool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.sum, pl.sq, pl.cnt = src.sum, src.sq, src.cnt
	for r := range pl.sum {
		pl.publish(r)
	}
}
