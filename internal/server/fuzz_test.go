package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzHandler sends arbitrary requests through every route: none may panic, none
// without a valid token may get past 401 (except /healthz), and no viewer's
// request may change anything.
func FuzzHandler(f *testing.F) {
	fx := newFixture(f)
	for _, r := range routes {
		f.Add(r.method, r.path, "", "")
		f.Add(r.method, r.path, "Bearer "+viewerTok, `{"mode":"auto"}`)
		f.Add(r.method, r.path, "Bearer "+adminTok, `{"mode":"auto"}`)
	}
	f.Add("GET", "/healthz", "", "")
	f.Add("GET", "/?token="+operatorTok, "", "")
	f.Add("GET", "/api/events?kind=approved&limit=3&vm=v1", "Bearer "+viewerTok, "")
	f.Add("POST", "/api/mode", "Bearer "+adminTok, `{"mode":"dry-run","x":1}`)
	f.Add("POST", "/api/mode", "bearer "+adminTok, `{"mode":"auto"}`)
	f.Add("GET", "/static/../server.go", "Bearer "+viewerTok, "")
	f.Fuzz(func(t *testing.T, method, target, auth, body string) {
		req, err := http.NewRequest(method, "http://headroom.test"+target, strings.NewReader(body))
		if err != nil || req.URL.Path == "" {
			return
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		before := fx.c.CurrentMode()
		pending := len(fx.c.Pending())
		rec := httptest.NewRecorder()
		fx.h.ServeHTTP(rec, req)
		valid := auth == "Bearer "+viewerTok || auth == "Bearer "+operatorTok || auth == "Bearer "+adminTok
		login := req.URL.Path == "/" && req.URL.Query().Has("token")
		if req.URL.Path != "/healthz" && !valid && !login && rec.Code != http.StatusUnauthorized {
			t.Fatalf("%s %q with %q: %d, want 401", method, target, auth, rec.Code)
		}
		if login && rec.Code != http.StatusSeeOther && rec.Code != http.StatusUnauthorized && !valid {
			t.Fatalf("login %q: %d", target, rec.Code)
		}
		if auth != "Bearer "+adminTok && fx.c.CurrentMode() != before {
			t.Fatalf("%s %q with %q changed the mode", method, target, auth)
		}
		if auth == "Bearer "+viewerTok && len(fx.c.Pending()) != pending {
			t.Fatalf("a viewer's %s %q changed the pending moves", method, target)
		}
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body)
		}
	})
}

// FuzzParseTokens: no input panics, and what parses checks its own hashes.
func FuzzParseTokens(f *testing.F) {
	f.Add([]byte("tokens:\n  - name: a\n    role: admin\n    sha256: " + HashHex("x") + "\n"))
	f.Add([]byte("tokens: []\n"))
	f.Add([]byte("tokens:\n  - name: a\n    role: admin\n    sha256: zz\n    expires: 2020-01-01T00:00:00Z\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseTokens(b, "f")
		if err != nil {
			return
		}
		for h, tok := range ts.byHash {
			if h != tok.Hash || tok.Role < Viewer || tok.Role > Admin || tok.Name == "" {
				t.Fatalf("bad entry %+v", tok)
			}
		}
	})
}
