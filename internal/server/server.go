// Package server is the controller's HTTP front: the authenticated API, the
// embedded dashboard at / and /metrics. It reads the controller and its observer
// (internal/metrics); it decides nothing.
//
// Every route except /healthz needs a bearer token from the tokens file, or the
// session cookie that /?token=<token> sets for a browser. Roles: viewer reads,
// operator approves and rejects, admin changes the mode and drains. A request
// with no token or a bad or expired one gets 401, one whose role is too low 403,
// one whose body is over the limit 413. State changes made with the cookie must
// carry the session's CSRF token in a header, which no other site can read or set.
package server

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/headroom/headroom/internal/controller"
	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/metrics"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/placement"
	"github.com/headroom/headroom/internal/store"
)

//go:embed web
var webFS embed.FS

// Options are what the server serves and how it guards it.
type Options struct {
	Controller *controller.Controller
	Log        *store.Log
	Observer   *metrics.Observer
	Tokens     *Tokens
	// PublicMetrics serves /metrics without a token.
	PublicMetrics bool
	// MaxBodyBytes bounds a request body (default 64 KiB).
	MaxBodyBytes int64
	// SecureCookie marks the session cookie Secure (set it when serving TLS).
	SecureCookie bool
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
}

// DefaultMaxBody bounds request bodies when Options.MaxBodyBytes is 0.
const DefaultMaxBody = 64 << 10

type server struct {
	Options
	sessions sessions
	static   http.Handler
}

// New returns the handler of every route.
func New(opt Options) http.Handler {
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = DefaultMaxBody
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Tokens == nil {
		opt.Tokens = NewTokens()
	}
	if opt.Observer == nil {
		opt.Observer = metrics.New(opt.Controller, opt.Log, metrics.Options{})
	}
	sub, _ := fs.Sub(webFS, "web")
	s := &server{Options: opt, static: http.StripPrefix("/static/", http.FileServerFS(sub))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	if opt.PublicMetrics {
		mux.Handle("GET /metrics", opt.Observer.Handler())
	} else {
		mux.Handle("GET /metrics", s.need(Viewer, opt.Observer.Handler()))
	}
	mux.HandleFunc("GET /{$}", s.need(Viewer, http.HandlerFunc(s.index)).ServeHTTP)
	mux.Handle("GET /static/", s.need(Viewer, s.static))
	mux.HandleFunc("GET /api/session", s.needFunc(Viewer, s.whoami))
	mux.HandleFunc("POST /api/logout", s.needFunc(Viewer, s.logout))
	mux.HandleFunc("GET /api/state", s.needFunc(Viewer, func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Observer.State(r.URL.Query().Get("points") != "0"))
	}))
	mux.HandleFunc("GET /api/vms", s.needFunc(Viewer, func(w http.ResponseWriter, _ *http.Request) { reply(w, s.Observer.VMs()) }))
	mux.HandleFunc("GET /api/vms/{vm}", s.needFunc(Viewer, func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.Observer.VM(r.PathValue("vm"))
		if !ok {
			http.Error(w, "no such VM in the last cycle", http.StatusNotFound)
			return
		}
		reply(w, v)
	}))
	mux.HandleFunc("GET /api/pending", s.needFunc(Viewer, func(w http.ResponseWriter, r *http.Request) { reply(w, s.pending(r)) }))
	mux.HandleFunc("GET /api/inflight", s.needFunc(Viewer, func(w http.ResponseWriter, _ *http.Request) { reply(w, s.Controller.Moves()) }))
	mux.HandleFunc("GET /api/events", s.needFunc(Viewer, s.events))
	mux.HandleFunc("GET /api/explain/{vm}", s.needFunc(Viewer, s.explain))
	mux.HandleFunc("POST /api/approve/{vm}", s.needFunc(Operator, s.approve))
	mux.HandleFunc("POST /api/reject/{vm}", s.needFunc(Operator, s.reject))
	mux.HandleFunc("POST /api/mode", s.needFunc(Admin, s.setMode))
	mux.HandleFunc("POST /api/drain/{host}", s.needFunc(Admin, s.drain))
	return s.authenticate(mux)
}

type ctxKey struct{}

func identity(r *http.Request) Identity {
	id, _ := r.Context().Value(ctxKey{}).(Identity)
	return id
}

// authenticate finds who sent a request (bearer token, else session cookie), turns
// /?token= into a session, and bounds the body. Only /healthz is open.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "/healthz" || (s.PublicMetrics && r.URL.Path == "/metrics") {
			next.ServeHTTP(w, r)
			return
		}
		now := s.Now()
		var id Identity
		switch auth := r.Header.Get("Authorization"); {
		case auth != "":
			secret, ok := strings.CutPrefix(auth, "Bearer ")
			tok, valid := s.Tokens.Check(strings.TrimSpace(secret), now)
			if !ok || !valid {
				unauthorized(w, "invalid or expired token")
				return
			}
			id = Identity{Name: tok.Name, Role: tok.Role}
		case r.URL.Path == "/" && r.URL.Query().Has("token"):
			s.login(w, r, now)
			return
		default:
			c, err := r.Cookie(sessionCookie)
			if err != nil {
				unauthorized(w, "a bearer token is required")
				return
			}
			ss, ok := s.sessions.get(c.Value, now)
			if !ok {
				unauthorized(w, "session expired; open /?token=<token> again")
				return
			}
			id = ss.id
			id.session = ss
			if unsafeMethod(r.Method) {
				// The cookie rides along on any request to this origin; only the
				// dashboard can read the CSRF token, and another site cannot set
				// this header without a preflight we never grant.
				if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
					http.Error(w, "cross-origin request refused", http.StatusForbidden)
					return
				}
				if !equal(r.Header.Get(csrfHeader), ss.csrf) {
					http.Error(w, "missing or wrong "+csrfHeader+" header", http.StatusForbidden)
					return
				}
			}
		}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			id.Cert = r.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		if r.Body != nil && r.Body != http.NoBody {
			if r.ContentLength > s.MaxBodyBytes {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBodyBytes))
			if err != nil {
				var mb *http.MaxBytesError
				if errors.As(err, &mb) {
					http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				} else {
					http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
				}
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		next.ServeHTTP(w, r.WithContext(contextWith(r, id)))
	})
}

func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="headroom"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

// login turns /?token=<token> into a session cookie and sends the browser to /,
// so the token leaves the address bar and history.
func (s *server) login(w http.ResponseWriter, r *http.Request, now time.Time) {
	tok, ok := s.Tokens.Check(r.URL.Query().Get("token"), now)
	if !ok {
		unauthorized(w, "invalid or expired token")
		return
	}
	key, ss := s.sessions.create(Identity{Name: tok.Name, Role: tok.Role}, tok, now)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: key, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.SecureCookie, Expires: ss.expires})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// need refuses a request whose role is below role.
func (s *server) need(role Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := identity(r); id.Role < role {
			http.Error(w, "this needs the "+role.String()+" role; "+id.Name+" is "+id.Role.String(), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *server) needFunc(role Role, h http.HandlerFunc) http.HandlerFunc {
	return s.need(role, h).ServeHTTP
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	b, err := webFS.ReadFile("web/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (s *server) whoami(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	out := map[string]string{"name": id.Name, "role": id.Role.String(), "mode": string(s.Controller.CurrentMode())}
	if id.Cert != "" {
		out["cert"] = id.Cert
	}
	if id.session != nil {
		out["csrf"] = id.session.csrf
	}
	reply(w, out)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	reply(w, map[string]string{"logged_out": identity(r).Name})
}

// EventKinds are the kinds GET /api/events?kind= accepts.
var EventKinds = []string{store.Decision, store.NoSuitableHost, store.Skipped, store.Approved, store.MigrationStart,
	store.MigrationEnd, store.Failure, store.Reconciled, store.Drain, controller.ModeChange, controller.MigrationVerify, controller.VMForgotten}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.Filter{VM: q.Get("vm"), Kind: q.Get("kind")}
	if f.Kind != "" && !slices.Contains(EventKinds, f.Kind) {
		http.Error(w, "kind: "+strconv.Quote(f.Kind)+" is not one of "+strings.Join(EventKinds, ", "), http.StatusBadRequest)
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			http.Error(w, "limit: want a non-negative integer", http.StatusBadRequest)
			return
		}
		f.Limit = n
	}
	es, err := s.Log.List(f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	reply(w, nonNil(es))
}

// pending lists the moves awaiting approval that the last cycle still planned:
// the controller keeps a move pending until it is approved or rejected, even
// after the plan stopped asking for it, and an approval starts a move only if
// the plan still wants it. ?all=1 lists every pending move.
func (s *server) pending(r *http.Request) []model.MigrationRequest {
	all := s.Controller.Pending()
	cy, _, ok := s.Observer.Last()
	if !ok || r.URL.Query().Get("all") == "1" {
		return nonNil(all)
	}
	planned := map[string]bool{}
	for _, m := range cy.Plan.Moves {
		planned[m.VMInstanceID] = true
	}
	out := []model.MigrationRequest{}
	for _, m := range all {
		if planned[m.VMInstanceID] {
			out = append(out, m)
		}
	}
	return out
}

// pendingCode is the status of an approval or rejection that did not take: no
// such pending move, or one the event log or etcd did not record.
func pendingCode(err error) int {
	if errors.Is(err, controller.ErrNotPending) {
		return http.StatusNotFound
	}
	return http.StatusServiceUnavailable
}

func (s *server) approve(w http.ResponseWriter, r *http.Request) {
	vm := r.PathValue("vm")
	if err := s.Controller.ApproveBy(vm, identity(r).String()); err != nil {
		http.Error(w, err.Error(), pendingCode(err))
		return
	}
	reply(w, map[string]string{"approved": vm, "by": identity(r).Name})
}

func (s *server) reject(w http.ResponseWriter, r *http.Request) {
	vm := r.PathValue("vm")
	if err := s.Controller.RejectBy(vm, identity(r).String()); err != nil {
		http.Error(w, err.Error(), pendingCode(err))
		return
	}
	reply(w, map[string]string{"rejected": vm, "by": identity(r).Name})
}

func (s *server) setMode(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Mode string `json:"mode"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		http.Error(w, `body: want {"mode": "dry-run" | "approve" | "auto"}: `+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.Controller.SetModeBy(controller.Mode(body.Mode), identity(r).String()); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply(w, map[string]string{"mode": body.Mode, "by": identity(r).Name})
}

func (s *server) drain(w http.ResponseWriter, r *http.Request) {
	plan, err := s.Controller.DrainBy(r.Context(), r.PathValue("host"), identity(r).String())
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, controller.ErrNotLeader) {
			// Another replica acts; the message names it.
			code = http.StatusConflict
		}
		http.Error(w, err.Error(), code)
		return
	}
	reply(w, plan)
}

// Explanation is why a VM moved or stayed in the last cycle, as plan --explain has it.
type Explanation struct {
	VM      string    `json:"vm"`
	Host    string    `json:"host"`
	Cycle   time.Time `json:"cycle"`
	Summary string    `json:"summary"`
	// Move is the plan's move of the VM, if any; Unplaced why it had to move and could not.
	Move       *model.MigrationRequest `json:"move,omitempty"`
	Unplaced   string                  `json:"unplaced,omitempty"`
	HostRisk   *core.HostRisk          `json:"host_risk,omitempty"`
	Candidates []placement.Candidate   `json:"candidates"`
}

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	vm := r.PathValue("vm")
	cy, at, ok := s.Observer.Last()
	if !ok {
		http.Error(w, "no cycle has run yet", http.StatusServiceUnavailable)
		return
	}
	vi := slices.IndexFunc(cy.Snapshot.VMs, func(v model.VM) bool { return v.ID == vm })
	if vi < 0 {
		http.Error(w, "no such VM in the last cycle", http.StatusNotFound)
		return
	}
	ex, ok := s.Controller.Explain(cy)
	if !ok {
		http.Error(w, "the policy cannot explain itself", http.StatusNotImplemented)
		return
	}
	snap := cy.Snapshot
	out := Explanation{VM: vm, Cycle: at, Candidates: []placement.Candidate{}}
	if h := snap.VMs[vi].Host; h >= 0 && h < len(snap.Hosts) {
		out.Host = snap.Hosts[h].ID
	}
	for i := range ex.Risks {
		if ex.Risks[i].Host == out.Host {
			out.HostRisk = &ex.Risks[i]
		}
	}
	for i := range ex.Moves {
		if ex.Moves[i].VMInstanceID == vm {
			out.Move = &ex.Moves[i]
		}
	}
	for _, u := range ex.Unplaced {
		if u.VM == vi {
			out.Unplaced = u.Reason
		}
	}
	if c := ex.Candidates[vm]; c != nil {
		out.Candidates = c
	}
	switch {
	case out.Move != nil:
		out.Summary = "migrate " + vm + " from " + out.Host + " to " + out.Move.TargetHostID + " (" + out.Move.Reason.Rule + "): " + out.Move.Reason.Detail
	case out.Unplaced != "":
		out.Summary = vm + " had to move from " + out.Host + " but cannot: " + out.Unplaced
	case snap.VMs[vi].Migrating():
		out.Summary = vm + " is migrating from " + out.Host
	case out.HostRisk != nil:
		out.Summary = vm + " stays on " + out.Host + ": " + out.HostRisk.Why
	default:
		out.Summary = vm + " stays on " + out.Host + ": the host is not at risk of overload within the horizon, and no consolidation wants it"
	}
	reply(w, out)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func contextWith(r *http.Request, id Identity) context.Context {
	return context.WithValue(r.Context(), ctxKey{}, id)
}
