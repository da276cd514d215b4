package prometheus

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeProm answers the HTTP API's query and query_range from tables keyed by
// the metric name a query mentions: a unit-test stand-in for the real server
// (the lab test and the benchmark use the real one).
type fakeProm struct {
	mu      sync.Mutex
	instant map[string][]fakeSeries // a substring of the query -> result
	ranges  map[string][]fakeSeries
	queries []string
	encs    []string // each request's Accept-Encoding
}

type fakeSeries struct {
	labels map[string]string
	value  float64      // instant
	points [][2]float64 // range: unix seconds, value
}

func (f *fakeProm) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		q := r.Form.Get("query")
		f.mu.Lock()
		f.queries = append(f.queries, q)
		f.encs = append(f.encs, r.Header.Get("Accept-Encoding"))
		table, typ := f.instant, "vector"
		if strings.HasSuffix(r.URL.Path, "query_range") {
			table, typ = f.ranges, "matrix"
		}
		var res []map[string]any
		for name, ss := range table {
			if !strings.Contains(q, name) {
				continue
			}
			for _, s := range ss {
				if !selected(q, s.labels) {
					continue
				}
				e := map[string]any{"metric": s.labels}
				if typ == "vector" {
					e["value"] = []any{float64(time.Now().Unix()), strconv.FormatFloat(s.value, 'g', -1, 64)}
				} else {
					var vs []any
					from, _ := strconv.ParseFloat(r.Form.Get("start"), 64)
					to, _ := strconv.ParseFloat(r.Form.Get("end"), 64)
					for _, p := range s.points {
						if p[0] >= from && p[0] <= to { // the range asked, as Prometheus answers
							vs = append(vs, []any{p[0], strconv.FormatFloat(p[1], 'g', -1, 64)})
						}
					}
					if vs == nil {
						continue
					}
					e["values"] = vs
				}
				res = append(res, e)
			}
		}
		f.mu.Unlock()
		if res == nil {
			res = []map[string]any{}
		}
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": typ, "result": res}})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// selected applies a host=~"a|b" matcher in q, the one the source adds.
func selected(q string, labels map[string]string) bool {
	i := strings.Index(q, `host=~"`)
	if i < 0 {
		return true
	}
	rest := q[i+len(`host=~"`):]
	alts := strings.Split(rest[:strings.Index(rest, `"`)], "|")
	for _, a := range alts {
		if a == labels["host"] {
			return true
		}
	}
	return false
}

func vmLabels(vm, host string) map[string]string {
	return map[string]string{"domain": vm, "host": host, "uuid": fmt.Sprintf("u-%s", vm)}
}
