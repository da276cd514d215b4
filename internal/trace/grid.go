package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

const (
	// maxTimestamp bounds Unix seconds (year ~36800) so that grid arithmetic cannot overflow.
	maxTimestamp = 1 << 40
	// maxValue bounds rates and sizes so that sums and means stay finite in float32.
	maxValue = 1e30
)

// maxGridSamples caps VMs x slots (16 bytes each), so that a stray timestamp cannot ask
// for gigabytes. A variable so that fuzz tests can keep inputs cheap.
var maxGridSamples int64 = 1 << 25

// sample is one row of a timed trace: CPU, Mem, Net, Disk.
type sample struct {
	t int64
	v [4]float64
}

// grid is the common time axis of a timed workload.
type grid struct {
	start, step int64
	n           int
}

// newGrid puts the earliest sample in slot 0: start is tmin rounded to the nearest
// multiple of step, which keeps the grid on round clock times.
func newGrid(tmin, tmax, step int64, vms int, label string) (grid, error) {
	start := (tmin + step/2) / step * step
	g := grid{start: start, step: step}
	slots := g.slot(tmax) + 1
	if slots > maxGridSamples || int64(vms)*slots > maxGridSamples {
		return g, &ParseError{File: label, Err: fmt.Errorf("%d VMs x %d steps of %d s is too large a grid (limit %d samples)", vms, slots, step, maxGridSamples)}
	}
	g.n = int(slots)
	return g, nil
}

// slot is the nearest grid slot to t (t >= start - step/2).
func (g grid) slot(t int64) int64 { return (t - g.start + g.step/2) / g.step }

// regularise puts samples on the grid: samples sharing a slot are averaged, interior
// empty slots are linearly interpolated, and slots before the first / after the last
// sample repeat it. It returns the number of samples merged or filled.
func (g grid) regularise(s []sample) (out [4][]float32, repaired int) {
	if !slices.IsSortedFunc(s, cmpSample) {
		slices.SortStableFunc(s, cmpSample)
	}
	for k := range out {
		out[k] = make([]float32, g.n)
	}
	last := -1
	var lastV [4]float64
	for i := 0; i < len(s); {
		slot := int(g.slot(s[i].t))
		sum := s[i].v
		j := i + 1
		for ; j < len(s) && int(g.slot(s[j].t)) == slot; j++ {
			for k := range sum {
				sum[k] += s[j].v[k]
			}
		}
		if n := j - i; n > 1 {
			repaired += n - 1
			for k := range sum {
				sum[k] /= float64(n)
			}
		}
		if last < 0 {
			for m := 0; m < slot; m++ {
				for k := range out {
					out[k][m] = float32(sum[k])
				}
			}
			repaired += slot
		} else {
			span := float64(slot - last)
			for m := last + 1; m < slot; m++ {
				f := float64(m-last) / span
				for k := range out {
					out[k][m] = float32(lastV[k] + (sum[k]-lastV[k])*f)
				}
			}
			repaired += slot - last - 1
		}
		for k := range out {
			out[k][slot] = float32(sum[k])
		}
		last, lastV = slot, sum
		i = j
	}
	for m := last + 1; m < g.n; m++ {
		for k := range out {
			out[k][m] = float32(lastV[k])
		}
	}
	repaired += g.n - 1 - last
	return out, repaired
}

func cmpSample(a, b sample) int {
	switch {
	case a.t < b.t:
		return -1
	case a.t > b.t:
		return 1
	}
	return 0
}

// forEach runs fn(0..n-1) on a few goroutines and returns the error of the lowest
// index that failed, so that errors do not depend on scheduling. After a failure no
// new index is started; every lower index was already started and runs to the end.
func forEach(n int, fn func(i int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n, 16)
	errs := make([]error, n)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if errs[i] = fn(i); errs[i] != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// listDir returns the sorted names of the trace files in dir: not folders and not
// hidden files, and ending in suffix when it is not empty.
func listDir(fsys fs.FS, dir, label, suffix string) ([]string, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &ParseError{File: label, Err: notFound("folder not found")}
		}
		return nil, fsErr(label, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, suffix) {
			continue
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		what := "files"
		if suffix != "" {
			what = suffix + " files"
		}
		return nil, &ParseError{File: label, Err: fmt.Errorf("folder has no trace %s", what)}
	}
	slices.Sort(names)
	return names, nil
}

// joinLabel names a file inside a folder the way the caller named the folder.
func joinLabel(label, name string) string {
	if label == "." || label == "" {
		return name
	}
	return path.Join(filepath.ToSlash(label), name)
}

// baseName is the last element of a folder or file label, for Workload.Name.
func baseName(label string) string {
	return path.Base(filepath.ToSlash(label))
}

// sortIDs orders VM IDs numerically when every ID is a number, else bytewise.
// It returns the permutation to apply.
func sortIDs(ids []string) []int {
	order := make([]int, len(ids))
	nums := make([]uint64, len(ids))
	numeric := true
	for i, id := range ids {
		order[i] = i
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			numeric = false
		}
		nums[i] = n
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if numeric && nums[a] != nums[b] {
			if nums[a] < nums[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(ids[a], ids[b])
	})
	return order
}

// nextLine cuts the first line off data, without its '\n'.
func nextLine(data []byte) (line, rest []byte) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return data[:i], data[i+1:]
	}
	return data, nil
}

// trim drops spaces, tabs and carriage returns at both ends.
func trim(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// splitFields cuts line at sep into dst (reused), trimming each field.
func splitFields(dst [][]byte, line []byte, sep byte) [][]byte {
	dst = dst[:0]
	for {
		i := bytes.IndexByte(line, sep)
		if i < 0 {
			return append(dst, trim(line))
		}
		dst = append(dst, trim(line[:i]))
		line = line[i+1:]
	}
}

// parseValue reads a finite number in [0, maxValue].
func parseValue(b []byte) (float64, error) {
	v, ok := parseDecimal(b)
	if !ok {
		// Other spellings (exponent overflow, hex, ...) get strconv's rules; string(b)
		// does not escape ParseFloat, so this does not allocate.
		var err error
		v, err = strconv.ParseFloat(string(b), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("%s is not a number", quote(b))
		}
	}
	if v < 0 {
		return 0, fmt.Errorf("%s is negative", quote(b))
	}
	if v > maxValue {
		return 0, fmt.Errorf("%s is out of range", quote(b))
	}
	return v, nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseDecimal is a fast path for plain decimals such as "-12.5" or "1.98E7", the only
// forms the traces use. strconv.ParseFloat spends most of its time on the 17-digit
// fractions in Bitbrains; this keeps the first 19 digits and is within a few float64
// ulps, far finer than the float32 that Series stores. ok is false for anything else.
func parseDecimal(b []byte) (v float64, ok bool) {
	i, neg := 0, false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	var mant uint64
	exp, digits, nd := 0, 0, 0 // nd: digits kept in mant
	seenDot := false
	for ; i < len(b); i++ {
		c := b[i]
		if c == '.' {
			if seenDot {
				return 0, false
			}
			seenDot = true
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		digits++
		if nd < 19 {
			if mant != 0 || c != '0' {
				nd++
			}
			mant = mant*10 + uint64(c-'0')
			if seenDot {
				exp--
			}
		} else if !seenDot {
			exp++
		}
	}
	if digits == 0 {
		return 0, false
	}
	if i < len(b) {
		if b[i] != 'e' && b[i] != 'E' {
			return 0, false
		}
		i++
		eneg := false
		if i < len(b) && (b[i] == '-' || b[i] == '+') {
			eneg = b[i] == '-'
			i++
		}
		if i == len(b) {
			return 0, false
		}
		e := 0
		for ; i < len(b); i++ {
			c := b[i]
			if c < '0' || c > '9' || e > 1000 {
				return 0, false
			}
			e = e*10 + int(c-'0')
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	v = float64(mant)
	switch {
	case mant == 0:
	case exp >= 0 && exp < len(pow10):
		v *= pow10[exp]
	case exp < 0 && -exp < len(pow10):
		v /= pow10[-exp]
	case exp > -300 && exp < 300:
		v *= math.Pow10(exp)
	default:
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// parseTimestamp reads whole Unix seconds in [0, maxTimestamp].
func parseTimestamp(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("%s is not an integer timestamp", quote(b))
	}
	var t int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%s is not an integer timestamp", quote(b))
		}
		t = t*10 + int64(c-'0')
		if t > maxTimestamp {
			return 0, fmt.Errorf("timestamp %s is out of range", quote(b))
		}
	}
	return t, nil
}

func clamp01(v float64) float64 {
	if v > 1 {
		return 1
	}
	if v < 0 {
		return 0
	}
	return v
}
