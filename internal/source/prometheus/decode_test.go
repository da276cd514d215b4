package prometheus

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type decoded struct {
	labels map[string]string
	ms     []int64
	vs     []float64
}

func decodeAll(b []byte) ([]decoded, error) {
	var out []decoded
	err := decodeMatrix(b, func(l map[string]string) func(int64, float64) {
		out = append(out, decoded{labels: maps.Clone(l)})
		d := &out[len(out)-1]
		return func(ms int64, v float64) {
			d.ms = append(d.ms, ms)
			d.vs = append(d.vs, v)
		}
	})
	return out, err
}

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// TestDecodeMatrix: Prometheus' own layout, other key orders, escapes,
// special values, warnings, error answers and malformed ones.
func TestDecodeMatrix(t *testing.T) {
	ok := `{"status":"success","data":{"resultType":"matrix","result":[` +
		`{"metric":{"domain":"a","host":"h\u00e9\"1"},"values":[[1700000000,"1.5"],[1700000060.5,"NaN"],[1700000120.25,"+Inf"]]},` +
		`{"values":[[1e9,"-2e-3"]],"extra":{"x":[1,true,null]},"metric":{"domain":"b","host":"h2"}},` +
		`{"metric":null,"values":null}]},"warnings":["w"]}`
	got, err := decodeAll([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d series: %+v", len(got), got)
	}
	if got[0].labels["host"] != "hé\"1" || got[0].labels["domain"] != "a" {
		t.Errorf("labels %v", got[0].labels)
	}
	wantMs := []int64{1700000000000, 1700000060500, 1700000120250}
	wantV := []float64{1.5, math.NaN(), math.Inf(1)}
	if !slices.Equal(got[0].ms, wantMs) || !slices.EqualFunc(got[0].vs, wantV, sameFloat) {
		t.Errorf("points %v %v", got[0].ms, got[0].vs)
	}
	if got[1].labels["domain"] != "b" || !slices.Equal(got[1].ms, []int64{1e12}) || got[1].vs[0] != -0.002 {
		t.Errorf("values before metric: %+v", got[1])
	}
	// The type may come after the result.
	if got, err := decodeAll([]byte(`{"data":{"result":[{"metric":{},"values":[[1,"2"]]}],"resultType":"matrix"},"status":"success"}`)); err != nil || len(got) != 1 || got[0].vs[0] != 2 {
		t.Errorf("result before type: %+v, %v", got, err)
	}
	var ae *apiError
	err = decodeMatrix([]byte(`{"status":"error","errorType":"bad_data","error":"parse error at char 3"}`), nil)
	if !errors.As(err, &ae) || ae.Type != "bad_data" || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("error answer: %v", err)
	}
	for _, bad := range []string{
		``, `{`, `[]`, `{"status":"success"}`,
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1]]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[["1","2"]]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[01,"2"]]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"\q"},"values":[]}]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[]}} x`,
	} {
		if _, err := decodeAll([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// randomMatrix is a query_range answer as encoding/json writes it, with
// the keys in an order the seed picks, and the points it holds.
func randomMatrix(seed uint64) ([]byte, []decoded) {
	r := rand.New(rand.NewPCG(seed, seed>>32))
	var want []decoded
	var series []string
	for range r.IntN(5) {
		d := decoded{labels: map[string]string{}}
		for range r.IntN(4) {
			k := fmt.Sprintf("l%d", r.IntN(9))
			v := string([]rune{rune(r.IntN(0x3000)), '"', '\\', rune('a' + r.IntN(26))})
			d.labels[k] = v
		}
		var pts []string
		for range r.IntN(6) {
			ms := r.Int64N(2e12)
			v := r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10))
			switch r.IntN(8) {
			case 0:
				v = math.NaN()
			case 1:
				v = math.Inf(-1)
			}
			d.ms, d.vs = append(d.ms, ms), append(d.vs, v)
			pts = append(pts, fmt.Sprintf("[%s,%q]", strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64), strconv.FormatFloat(v, 'g', -1, 64)))
		}
		lb, _ := json.Marshal(d.labels)
		m, vs := `"metric":`+string(lb), `"values":[`+strings.Join(pts, ",")+`]`
		if r.IntN(2) == 0 {
			m, vs = vs, m
		}
		series = append(series, "{"+m+", \n"+vs+"}")
		want = append(want, d)
	}
	res, typ := `"result":[`+strings.Join(series, ",")+`]`, `"resultType":"matrix"`
	if r.IntN(2) == 0 {
		res, typ = typ, res
	}
	return []byte(`{"status":"success","data":{` + typ + "," + res + `}}`), want
}

func checkDecoded(t *testing.T, b []byte, got, want []decoded) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d series, want %d", b, len(got), len(want))
	}
	for i := range want {
		if !maps.Equal(got[i].labels, want[i].labels) || !slices.Equal(got[i].ms, want[i].ms) || !slices.EqualFunc(got[i].vs, want[i].vs, sameFloat) {
			t.Fatalf("%s: series %d: %+v, want %+v", b, i, got[i], want[i])
		}
	}
}

func TestDecodeMatrixRoundTrip(t *testing.T) {
	for seed := range uint64(300) {
		b, want := randomMatrix(seed)
		got, err := decodeAll(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		checkDecoded(t, b, got, want)
	}
}

// FuzzDecodeMatrix: any input decodes or fails without panicking; what
// decodes is valid JSON; a generated answer decodes to what it holds.
func FuzzDecodeMatrix(f *testing.F) {
	for seed := range uint64(8) {
		b, _ := randomMatrix(seed)
		f.Add(b, seed)
	}
	f.Add([]byte(`{"status":"error","errorType":"timeout","error":"x"}`), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		if _, err := decodeAll(b); err == nil && !json.Valid(b) {
			t.Errorf("%q: decoded, but not valid JSON", b)
		}
		g, want := randomMatrix(seed)
		got, err := decodeAll(g)
		if err != nil {
			t.Fatalf("%s: %v", g, err)
		}
		checkDecoded(t, g, got, want)
	})
}

// FuzzFastFloat: where fastFloat answers, it is ParseFloat's float64, bit
// for bit, and it answers for the usual shapes of a value.
func FuzzFastFloat(f *testing.F) {
	for _, s := range []string{"0", "-0", "1", "0.4837266454011544", "12345.678", "9007199254740992", "9007199254740993",
		"0.48372664540115443", "1e3", ".5", "5.", "-", "", "1.2.3", "00012.5000", "-3.25", "0.0000000000000000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := fastFloat([]byte(s))
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("fastFloat(%q) = %v (%x), ParseFloat %v (%x), %v", s, got, math.Float64bits(got), want, math.Float64bits(want), err)
		}
	})
}

// TestFastFloatTakesUsualValues: the fast path is taken for values as
// Prometheus formats rates (so the speed-up is real), left for the rest.
func TestFastFloatTakesUsualValues(t *testing.T) {
	for _, s := range []string{"0.4837266454011544", "123456.75", "-2.5", "1", "0.000123"} {
		if _, ok := fastFloat([]byte(s)); !ok {
			t.Errorf("%q: not taken", s)
		}
	}
	for _, s := range []string{"1e3", "NaN", "+Inf", "0.48372664540115443", ".5", "5.", "1.2.3", "0x10"} {
		if _, ok := fastFloat([]byte(s)); ok {
			t.Errorf("%q: taken", s)
		}
	}
}

// BenchmarkDecodeMatrix: the decoder alone, per point.
func BenchmarkDecodeMatrix(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	const series, pts = 200, 2080
	for s := range series {
		if s > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"metric":{"domain":"vm%04d","host":"h%03d"},"values":[`, s, s/10)
		for i := range pts {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `[%d,"%s"]`, 1700000000+300*i, strconv.FormatFloat(0.5+0.25*math.Sin(float64(i)/40), 'f', -1, 64))
		}
		sb.WriteString("]}")
	}
	sb.WriteString("]}}")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	sum := 0.0
	sink := func(map[string]string) func(int64, float64) { return func(_ int64, v float64) { sum += v } }
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeMatrix(body, sink); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*series*pts), "ns/point")
}
