package prometheus

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A backfill's answers are large (a week for 10,000 VMs is tens of millions
// of points), and client_golang decodes each point into its own value through
// reflection. decodeMatrix instead walks the query_range JSON once, in place,
// and hands each point to the caller without allocating.

// matrixSink receives a matrix: series is called with each series' labels
// (name -> value; the map is reused, do not keep it) and returns the function
// that takes its points (millisecond time, value), or nil to skip them.
type matrixSink func(labels map[string]string) func(ms int64, v float64)

// apiError is an error answer of the HTTP API.
type apiError struct{ Type, Msg string }

func (e *apiError) Error() string { return e.Type + ": " + e.Msg }

type decoder struct {
	b   []byte
	i   int
	lbl map[string]string
}

var errSyntax = errors.New("malformed JSON")

func (d *decoder) fail(what string) error {
	return fmt.Errorf("query_range answer, byte %d: %s: %w", d.i, what, errSyntax)
}

// decodeMatrix decodes a query_range answer {"status": ..., "data":
// {"resultType": "matrix", "result": [{"metric": {...}, "values": [[t, "v"],
// ...]}, ...]}}, in any key order, unknown keys skipped. An error answer
// comes back as *apiError.
func decodeMatrix(b []byte, sink matrixSink) error {
	d := &decoder{b: b, lbl: map[string]string{}}
	var status, errType, errMsg string
	sawData := false
	err := d.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "status":
			status, err = d.str()
		case "errorType":
			errType, err = d.str()
		case "error":
			errMsg, err = d.str()
		case "data":
			if status == "error" || d.peek() == 'n' {
				return d.skip()
			}
			sawData = true
			err = d.data(sink)
		default:
			err = d.skip()
		}
		return err
	})
	if err != nil {
		return err
	}
	d.ws()
	if d.i != len(d.b) {
		return d.fail("trailing data")
	}
	switch {
	case status == "error" || errMsg != "":
		return &apiError{errType, errMsg}
	case status != "success":
		return fmt.Errorf("query_range answer: status %q", status)
	case !sawData:
		return fmt.Errorf("query_range answer: no data")
	}
	return nil
}

func (d *decoder) data(sink matrixSink) error {
	var resultType string
	var result []byte // the raw result array, if it came before its type
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "resultType":
			var err error
			resultType, err = d.str()
			return err
		case "result":
			if resultType == "matrix" { // Prometheus' own order: decode in place
				result = []byte{}
				return d.result(sink)
			}
			start := d.i
			if err := d.skip(); err != nil {
				return err
			}
			result = d.b[start:d.i]
			return nil
		}
		return d.skip()
	})
	if err != nil {
		return err
	}
	if resultType != "matrix" {
		return fmt.Errorf("query_range answer: a %q, not a matrix", resultType)
	}
	if result == nil {
		return fmt.Errorf("query_range answer: no result")
	}
	if len(result) == 0 {
		return nil
	}
	return (&decoder{b: result, lbl: d.lbl}).result(sink)
}

func (d *decoder) result(sink matrixSink) error {
	if d.peek() == 'n' {
		return d.lit("null")
	}
	return d.array(func() error { return d.series(sink) })
}

func (d *decoder) series(sink matrixSink) error {
	clear(d.lbl)
	var values []byte // the raw values, if they came before the labels
	sawMetric, done := false, false
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "metric":
			sawMetric = true
			if d.peek() == 'n' {
				return d.lit("null")
			}
			return d.object(func(name []byte) error {
				v, err := d.str()
				if err != nil {
					return err
				}
				d.lbl[string(name)] = v
				return nil
			})
		case "values":
			if sawMetric { // Prometheus' own order: decode in place
				done = true
				return d.points(sink(d.lbl))
			}
			start := d.i
			if err := d.skip(); err != nil {
				return err
			}
			values = d.b[start:d.i]
			return nil
		}
		return d.skip()
	})
	if err != nil || done || values == nil {
		return err
	}
	return (&decoder{b: values}).points(sink(d.lbl))
}

// points decodes [[t, "v"], ...] into fn; a nil fn only checks the syntax.
func (d *decoder) points(fn func(ms int64, v float64)) error {
	if d.peek() == 'n' {
		return d.lit("null")
	}
	return d.array(func() error {
		if err := d.expect('['); err != nil {
			return err
		}
		num, err := d.number()
		if err != nil {
			return err
		}
		ms, ok := fastMillis(num)
		if !ok {
			t, err := strconv.ParseFloat(string(num), 64)
			if err != nil || math.Abs(t) > 1e13 {
				return d.fail("bad timestamp")
			}
			ms = int64(math.Round(t * 1000))
		}
		if err := d.expect(','); err != nil {
			return err
		}
		raw, esc, err := d.rawStr()
		if err != nil {
			return err
		}
		if esc {
			return d.fail("escaped sample value")
		}
		v, ok := fastFloat(raw)
		if !ok {
			if v, err = strconv.ParseFloat(string(raw), 64); err != nil {
				return d.fail("bad sample value")
			}
		}
		if err := d.expect(']'); err != nil {
			return err
		}
		if fn != nil {
			fn(ms, v)
		}
		return nil
	})
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *decoder) expect(c byte) error {
	if d.peek() != c {
		return d.fail("expected " + strconv.QuoteRune(rune(c)))
	}
	d.i++
	return nil
}

// object calls fn for each key with d just before the value; fn consumes it.
func (d *decoder) object(fn func(key []byte) error) error {
	if err := d.expect('{'); err != nil {
		return err
	}
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		raw, esc, err := d.rawStr()
		if err != nil {
			return err
		}
		if esc {
			var s string
			if err := json.Unmarshal(d.quoted(raw), &s); err != nil {
				return d.fail("bad key")
			}
			raw = []byte(s)
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		if err := fn(raw); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.fail("expected , or }")
		}
	}
}

// array calls fn with d just before each element; fn consumes it.
func (d *decoder) array(fn func() error) error {
	if err := d.expect('['); err != nil {
		return err
	}
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.fail("expected , or ]")
		}
	}
}

// rawStr reads a string and returns its bytes between the quotes, and
// whether they hold escapes.
func (d *decoder) rawStr() ([]byte, bool, error) {
	if err := d.expect('"'); err != nil {
		return nil, false, err
	}
	start, esc := d.i, false
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], esc, nil
		case c == '\\':
			esc = true
			if d.i+1 >= len(d.b) {
				return nil, false, d.fail("unterminated string")
			}
			switch d.b[d.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.i += 2
			case 'u':
				if d.i+6 > len(d.b) {
					return nil, false, d.fail("unterminated string")
				}
				for _, h := range d.b[d.i+2 : d.i+6] {
					if !strings.ContainsRune("0123456789abcdefABCDEF", rune(h)) {
						return nil, false, d.fail("bad \\u escape")
					}
				}
				d.i += 6
			default:
				return nil, false, d.fail("bad escape")
			}
		case c < 0x20:
			return nil, false, d.fail("control character in a string")
		default:
			d.i++
		}
	}
	return nil, false, d.fail("unterminated string")
}

// quoted is raw with its quotes, for encoding/json.
func (d *decoder) quoted(raw []byte) []byte {
	q := make([]byte, 0, len(raw)+2)
	return append(append(append(q, '"'), raw...), '"')
}

func (d *decoder) str() (string, error) {
	raw, esc, err := d.rawStr()
	if err != nil || !esc {
		return string(raw), err
	}
	var s string
	if err := json.Unmarshal(d.quoted(raw), &s); err != nil {
		return "", d.fail("bad string")
	}
	return s, nil
}

// number reads a JSON number, strictly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() ([]byte, error) {
	d.ws()
	start := d.i
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.b) && d.b[d.i] == '0':
		d.i++
	case digits() == 0:
		return nil, d.fail("expected a number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return nil, d.fail("bad number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return nil, d.fail("bad number")
		}
	}
	return d.b[start:d.i], nil
}

func (d *decoder) lit(s string) error {
	d.ws()
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return d.fail("expected " + s)
	}
	d.i += len(s)
	return nil
}

// skip consumes any value.
func (d *decoder) skip() error {
	switch c := d.peek(); {
	case c == '{':
		return d.object(func([]byte) error { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		_, _, err := d.rawStr()
		return err
	case c == 't':
		return d.lit("true")
	case c == 'f':
		return d.lit("false")
	case c == 'n':
		return d.lit("null")
	default:
		_, err := d.number()
		return err
	}
}

// fastMillis reads Prometheus' usual timestamps, seconds with at most three
// decimals, as milliseconds; anything else is left to ParseFloat.
func fastMillis(b []byte) (int64, bool) {
	var ms int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		ms = ms*10 + int64(b[i]-'0')
	}
	if i == 0 || i > 11 {
		return 0, false
	}
	frac := 0
	if i < len(b) && b[i] == '.' {
		i++
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && frac < 3; i++ {
			ms = ms*10 + int64(b[i]-'0')
			frac++
		}
		if frac == 0 {
			return 0, false
		}
	}
	if i != len(b) {
		return 0, false
	}
	for ; frac < 3; frac++ {
		ms *= 10
	}
	return ms, true
}

// pow10 are the powers of ten a float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// fastFloat reads the sample values Prometheus usually writes, [-]d[.d]
// without an exponent, when the digits form an integer m ≤ 2^53 and there are
// at most 22 decimals: m and 10^decimals are then exact float64s and one
// division rounds correctly (Clinger's fast path), the same float64 as
// ParseFloat. Anything else is left to ParseFloat. A backfill parses tens of
// millions of values, and ParseFloat's general path was a quarter of the
// client's CPU.
func fastFloat(b []byte) (float64, bool) {
	i, neg := 0, false
	if len(b) > 0 && b[0] == '-' {
		i, neg = 1, true
	}
	var m uint64
	nd, frac, start := 0, -1, i
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			if nd++; nd > 19 {
				return 0, false
			}
			m = m*10 + uint64(c-'0')
			if frac >= 0 {
				frac++
			}
		case c == '.' && frac < 0 && i > start:
			frac = 0
		default:
			return 0, false
		}
	}
	if nd == 0 || frac == 0 || m > 1<<53 || frac >= len(pow10) {
		return 0, false
	}
	f := float64(m)
	if frac > 0 {
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}
