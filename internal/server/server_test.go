package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/hypervisor"
	"github.com/headroom/headroom/internal/hypervisor/memory"
	"github.com/headroom/headroom/internal/metrics"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// Secrets of the test tokens.
const (
	viewerTok   = "viewer-secret"
	operatorTok = "operator-secret"
	adminTok    = "admin-secret"
	expiredTok  = "expired-secret"
)

type fixture struct {
	c   *controller.Controller
	log *store.Log
	obs *metrics.Observer
	srv *httptest.Server
	h   http.Handler
}

// newFixture is a controller in approve mode over an in-memory cluster with one
// hot host, after one cycle, so a move awaits approval.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	var hs []hypervisor.Host
	var hcs []controller.HostConfig
	for _, id := range []string{"a", "b"} {
		hs = append(hs, hypervisor.Host{ID: id, PEs: 2, PEMIPS: 1000, Capacity: model.Resources{Mem: 8192}})
		hcs = append(hcs, controller.HostConfig{ID: id, URI: "mem://" + id})
	}
	d := memory.New(memory.Options{}, hs...)
	for _, vm := range []string{"v1", "v2", "v3"} {
		d.AddVM(hypervisor.VM{ID: vm, Host: "a", VCPUs: 1, MemMiB: 128, State: hypervisor.StateRunning}, memory.Usage{CPUUtil: 0.9})
	}
	log, err := store.Open(filepath.Join(t.TempDir(), "e.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	c, err := controller.New(controller.Config{Interval: 10 * time.Second, Mode: controller.Approve, Hosts: hcs}, d, log)
	if err != nil {
		t.Fatal(err)
	}
	obs := metrics.New(c, log, metrics.Options{PerVM: 10})
	cy, err := c.Step(context.Background())
	obs.Observe(cy, err)
	if err != nil {
		t.Fatal(err)
	}
	tokens := NewTokens()
	tokens.Add("vera", Viewer, viewerTok, time.Time{})
	tokens.Add("otto", Operator, operatorTok, time.Time{})
	tokens.Add("ada", Admin, adminTok, time.Time{})
	tokens.Add("old", Admin, expiredTok, time.Now().Add(-time.Minute))
	h := New(Options{Controller: c, Log: log, Observer: obs, Tokens: tokens})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{c: c, log: log, obs: obs, srv: srv, h: h}
}

func (f *fixture) do(t testing.TB, method, path, token string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decode(t testing.TB, resp *http.Response, v any) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %s %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// routes is every route the server has, with a path that reaches it.
var routes = []struct{ method, path string }{
	{"GET", "/metrics"}, {"GET", "/"}, {"GET", "/static/app.js"}, {"GET", "/static/style.css"},
	{"GET", "/api/session"}, {"POST", "/api/logout"}, {"GET", "/api/state"}, {"GET", "/api/vms"},
	{"GET", "/api/vms/v1"}, {"GET", "/api/pending"}, {"GET", "/api/inflight"}, {"GET", "/api/events"},
	{"GET", "/api/explain/v1"}, {"POST", "/api/approve/v1"}, {"POST", "/api/reject/v1"},
	{"POST", "/api/mode"}, {"POST", "/api/drain/a"}, {"GET", "/no/such/route"},
}

func TestEveryRouteButHealthzNeedsAValidToken(t *testing.T) {
	f := newFixture(t)
	for _, r := range routes {
		for _, tok := range []string{"", "wrong", expiredTok} {
			resp := f.do(t, r.method, r.path, tok, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %s, want 401", r.method, r.path, tok, resp.Status)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", r.method, r.path)
			}
		}
		// A viewer reaches every read route.
		if r.method == "GET" && r.path != "/no/such/route" {
			if resp := f.do(t, r.method, r.path, viewerTok, nil); resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s as viewer: %s, want 200", r.method, r.path, resp.Status)
			}
		}
	}
	if resp := f.do(t, "GET", "/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s, want 200 without a token", resp.Status)
	}
	// A session cookie that no login made is as bad as no token.
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/state", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "forged"})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged cookie: %v %v, want 401", err, resp.Status)
	}
}

func TestRolesAndTheApproverInTheLog(t *testing.T) {
	f := newFixture(t)
	var pending []model.MigrationRequest
	decode(t, f.do(t, "GET", "/api/pending", viewerTok, nil), &pending)
	if len(pending) == 0 {
		t.Fatal("nothing pending")
	}
	vm := pending[0].VMInstanceID
	if resp := f.do(t, "POST", "/api/approve/"+vm, viewerTok, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer approves: %s, want 403", resp.Status)
	}
	if resp := f.do(t, "POST", "/api/mode", operatorTok, strings.NewReader(`{"mode":"auto"}`)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("operator changes the mode: %s, want 403", resp.Status)
	}
	if resp := f.do(t, "POST", "/api/drain/a", operatorTok, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("operator drains: %s, want 403", resp.Status)
	}
	if f.c.CurrentMode() != controller.Approve {
		t.Fatalf("mode is %s after refused changes", f.c.CurrentMode())
	}
	if resp := f.do(t, "POST", "/api/approve/"+vm, operatorTok, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("operator approves: %s", resp.Status)
	}
	if resp := f.do(t, "POST", "/api/approve/nobody", operatorTok, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("approving an unknown VM: %s, want 404", resp.Status)
	}
	var events []store.Event
	decode(t, f.do(t, "GET", "/api/events?kind=approved", viewerTok, nil), &events)
	if len(events) != 1 || events[0].VM != vm || !strings.Contains(events[0].Message, "otto (operator)") {
		t.Errorf("approved events %+v: want one for %s naming otto", events, vm)
	}
	// The approval takes effect at the next cycle: the move starts.
	cy, err := f.c.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cy.Started) != 1 || cy.Started[0] != vm {
		t.Errorf("after approval the cycle started %v, want [%s]", cy.Started, vm)
	}
	var moves []controller.Move
	decode(t, f.do(t, "GET", "/api/inflight", viewerTok, nil), &moves)
	if len(moves) != 1 || moves[0].VM != vm {
		t.Errorf("in flight %+v, want %s", moves, vm)
	}

	if resp := f.do(t, "POST", "/api/mode", adminTok, strings.NewReader(`{"mode":"dry-run"}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin changes the mode: %s", resp.Status)
	}
	if resp := f.do(t, "POST", "/api/mode", adminTok, strings.NewReader(`{"mode":"yolo"}`)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown mode: %s, want 400", resp.Status)
	}
	decode(t, f.do(t, "GET", "/api/events?kind=mode-change", viewerTok, nil), &events)
	if len(events) != 1 || !strings.Contains(events[0].Message, "approve -> dry-run by ada (admin)") {
		t.Errorf("mode-change events %+v", events)
	}
	if f.c.CurrentMode() != controller.DryRun {
		t.Errorf("mode %s, want dry-run", f.c.CurrentMode())
	}
}

func TestReject(t *testing.T) {
	f := newFixture(t)
	pending := f.c.Pending()
	if len(pending) == 0 {
		t.Fatal("nothing pending")
	}
	vm := pending[0].VMInstanceID
	if resp := f.do(t, "POST", "/api/reject/"+vm, operatorTok, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("reject: %s", resp.Status)
	}
	for _, m := range f.c.Pending() {
		if m.VMInstanceID == vm {
			t.Errorf("%s still pending after its rejection", vm)
		}
	}
	var events []store.Event
	decode(t, f.do(t, "GET", "/api/events?kind=skipped&vm="+vm, viewerTok, nil), &events)
	if n := len(events); n == 0 || events[n-1].Message != "rejected by otto (operator)" {
		t.Errorf("events %+v: want the rejection by otto last", events)
	}
}

func TestOversizedBody(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat("x", DefaultMaxBody+1)
	if resp := f.do(t, "POST", "/api/mode", adminTok, strings.NewReader(big)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body with a length: %s, want 413", resp.Status)
	}
	// Chunked, so the server learns the size only by reading.
	req, _ := http.NewRequest("POST", f.srv.URL+"/api/approve/v1", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+operatorTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized chunked body: %s, want 413", resp.Status)
	}
	if f.c.CurrentMode() != controller.Approve {
		t.Errorf("an oversized request changed the mode to %s", f.c.CurrentMode())
	}
}

// Issue 11, item 10: unknown kinds are refused, and no events is [] (it was null).
func TestEventsKindFilter(t *testing.T) {
	f := newFixture(t)
	resp := f.do(t, "GET", "/api/events?kind=aproved", viewerTok, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown kind: %s, want 400", resp.Status)
	}
	resp = f.do(t, "GET", "/api/events?kind=reconciled", viewerTok, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("no reconciled events: %s %q, want 200 []", resp.Status, b)
	}
	resp = f.do(t, "GET", "/api/events?vm=nobody", viewerTok, nil)
	b, _ = io.ReadAll(resp.Body)
	if strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("no events of an unknown VM: %q, want []", b)
	}
	if r := f.do(t, "GET", "/api/events?limit=x", viewerTok, nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("bad limit: %s, want 400", r.Status)
	}
}

// noRedirect keeps the client on the login response.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestBrowserLoginAndCSRF(t *testing.T) {
	f := newFixture(t)
	resp, err := noRedirect.Get(f.srv.URL + "/?token=wrong")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("bad login token: %s with %d cookies, want 401 and none", resp.Status, len(resp.Cookies()))
	}
	resp, err = noRedirect.Get(f.srv.URL + "/?token=" + url.QueryEscape(operatorTok))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: %s to %q, want 303 to /", resp.Status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Value == operatorTok {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not the token", cookie)
	}
	send := func(method, path, csrf, origin string) *http.Response {
		req, _ := http.NewRequest(method, f.srv.URL+path, nil)
		req.AddCookie(cookie)
		if csrf != "" {
			req.Header.Set(csrfHeader, csrf)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if r := send("GET", "/", "", ""); r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("dashboard with the cookie: %s %s", r.Status, r.Header.Get("Content-Type"))
	}
	var who map[string]string
	decode(t, send("GET", "/api/session", "", ""), &who)
	if who["name"] != "otto" || who["role"] != "operator" || who["csrf"] == "" {
		t.Fatalf("session %v", who)
	}
	vm := f.c.Pending()[0].VMInstanceID
	if r := send("POST", "/api/approve/"+vm, "", ""); r.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST without the CSRF header: %s, want 403", r.Status)
	}
	if r := send("POST", "/api/approve/"+vm, "guess", ""); r.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST with a wrong CSRF header: %s, want 403", r.Status)
	}
	if r := send("POST", "/api/approve/"+vm, who["csrf"], "https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST from another origin: %s, want 403", r.Status)
	}
	if n := len(f.c.Pending()); n == 0 {
		t.Fatal("a refused request changed the pending list")
	}
	if r := send("POST", "/api/approve/"+vm, who["csrf"], f.srv.URL); r.StatusCode != http.StatusOK {
		t.Errorf("cookie POST with the CSRF header: %s, want 200", r.Status)
	}
	if r := send("POST", "/api/logout", who["csrf"], ""); r.StatusCode != http.StatusOK {
		t.Errorf("logout: %s", r.Status)
	}
	if r := send("GET", "/api/state", "", ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("after logout: %s, want 401", r.Status)
	}
}

func TestExplainAndState(t *testing.T) {
	f := newFixture(t)
	vm := f.c.Pending()[0].VMInstanceID
	var ex Explanation
	decode(t, f.do(t, "GET", "/api/explain/"+vm, viewerTok, nil), &ex)
	if ex.Move == nil || ex.Host != "a" || !strings.HasPrefix(ex.Summary, "migrate "+vm+" from a to b") || len(ex.Candidates) == 0 {
		t.Errorf("explain %s: %+v", vm, ex)
	}
	if r := f.do(t, "GET", "/api/explain/nobody", viewerTok, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("explain an unknown VM: %s, want 404", r.Status)
	}
	var st metrics.State
	decode(t, f.do(t, "GET", "/api/state", viewerTok, nil), &st)
	if len(st.Hosts) != 2 || st.Hosts[0].ID != "a" || len(st.Hosts[0].VMs) != 3 || len(st.Hosts[0].Points) != 1 {
		t.Errorf("state %+v", st)
	}
	if p := st.Hosts[0].Points[0].R["cpu"]; p.Demand <= 0 || p.Capacity != 2000 {
		t.Errorf("host a cpu %+v", p)
	}
}

func TestPublicMetrics(t *testing.T) {
	f := newFixture(t)
	h := New(Options{Controller: f.c, Log: f.log, Observer: f.obs, Tokens: NewTokens(), PublicMetrics: true})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "headroom_host_demand") {
		t.Errorf("public /metrics: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/state", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("public metrics opened /api/state: %d", rec.Code)
	}
}

func TestParseTokens(t *testing.T) {
	good := "tokens:\n  - name: alice\n    role: operator\n    sha256: " + HashHex("s3cret") + "\n    expires: 2030-01-01T00:00:00Z\n"
	ts, err := ParseTokens([]byte(good), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if tok, ok := ts.Check("s3cret", time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)); !ok || tok.Name != "alice" || tok.Role != Operator {
		t.Errorf("check before expiry: %+v %v", tok, ok)
	}
	if _, ok := ts.Check("s3cret", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)); ok {
		t.Error("a token accepted at its expiry")
	}
	if _, ok := ts.Check("other", time.Time{}); ok {
		t.Error("a wrong token accepted")
	}
	for _, bad := range []string{
		"tokens:\n  - name: a\n    role: root\n    sha256: " + HashHex("x") + "\n",
		"tokens:\n  - name: a\n    role: viewer\n    sha256: abc\n",
		"tokens:\n  - role: viewer\n    sha256: " + HashHex("x") + "\n",
		"tokens:\n  - name: a\n    role: viewer\n    sha256: " + HashHex("x") + "\n  - name: b\n    role: viewer\n    sha256: " + HashHex("x") + "\n",
		"tokens:\n  - name: a\n    role: viewer\n    token: x\n",
	} {
		if _, err := ParseTokens([]byte(bad), "t.yaml"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestExampleTokensFile(t *testing.T) {
	ts, err := LoadTokens("../../examples/tokens.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ts.Len() != 3 {
		t.Errorf("examples/tokens.yaml: %d tokens, want 3", ts.Len())
	}
}
