package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Role is what a token may do; each role may do what the ones below it may.
type Role int

const (
	Viewer   Role = iota + 1 // read
	Operator                 // approve and reject moves
	Admin                    // change the mode, drain a host
)

func (r Role) String() string {
	switch r {
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	case Admin:
		return "admin"
	}
	return "none"
}

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{Viewer, Operator, Admin} {
		if s == r.String() {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q is not viewer, operator or admin", s)
}

// Token is one entry of the tokens file: a name for the event log, a role, the
// SHA-256 of the secret, and an optional expiry.
type Token struct {
	Name    string
	Role    Role
	Hash    [sha256.Size]byte
	Expires time.Time // zero: never
}

// Tokens are the accepted bearer tokens, by hash. Safe for concurrent use once built.
type Tokens struct {
	byHash map[[sha256.Size]byte]Token
}

// NewTokens returns an empty set (which accepts nobody).
func NewTokens() *Tokens { return &Tokens{byHash: map[[sha256.Size]byte]Token{}} }

// tokensFile is the YAML form of the tokens file.
type tokensFile struct {
	Tokens []struct {
		Name    string    `yaml:"name"`
		Role    string    `yaml:"role"`
		SHA256  string    `yaml:"sha256"`
		Expires time.Time `yaml:"expires"`
	} `yaml:"tokens"`
}

// LoadTokens reads a tokens file (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTokens(b, path)
}

// ParseTokens reads the YAML tokens file, which holds only hashes:
//
//	tokens:
//	  - name: alice          # who, as the event log names them
//	    role: operator       # viewer, operator or admin
//	    sha256: 5e88...      # hex SHA-256 of the token (headroom token prints it)
//	    expires: 2027-01-01T00:00:00Z   # optional
func ParseTokens(b []byte, name string) (*Tokens, error) {
	var f tokensFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ts := NewTokens()
	names := map[string]bool{}
	for i, t := range f.Tokens {
		if t.Name == "" {
			return nil, fmt.Errorf("%s: tokens[%d].name: required", name, i)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%s: tokens[%d].name: %q given twice", name, i, t.Name)
		}
		names[t.Name] = true
		r, err := ParseRole(t.Role)
		if err != nil {
			return nil, fmt.Errorf("%s: tokens[%d].role: %w", name, i, err)
		}
		h, err := hex.DecodeString(strings.TrimPrefix(t.SHA256, "sha256:"))
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%s: tokens[%d].sha256: want 64 hex digits", name, i)
		}
		tok := Token{Name: t.Name, Role: r, Expires: t.Expires}
		copy(tok.Hash[:], h)
		if _, dup := ts.byHash[tok.Hash]; dup {
			return nil, fmt.Errorf("%s: tokens[%d].sha256: the same token twice", name, i)
		}
		ts.byHash[tok.Hash] = tok
	}
	return ts, nil
}

// Add accepts secret as name with role until expires (zero: never).
func (ts *Tokens) Add(name string, role Role, secret string, expires time.Time) {
	ts.byHash[sha256.Sum256([]byte(secret))] = Token{Name: name, Role: role, Hash: sha256.Sum256([]byte(secret)), Expires: expires}
}

// Len is the number of tokens.
func (ts *Tokens) Len() int { return len(ts.byHash) }

// Check returns the token whose hash is secret's, if it has not expired.
func (ts *Tokens) Check(secret string, now time.Time) (Token, bool) {
	if secret == "" {
		return Token{}, false
	}
	t, ok := ts.byHash[sha256.Sum256([]byte(secret))]
	if !ok || (!t.Expires.IsZero() && !now.Before(t.Expires)) {
		return Token{}, false
	}
	return t, true
}

// NewSecret makes a random token: 32 bytes from the system's CSPRNG.
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "hr_" + base64.RawURLEncoding.EncodeToString(b)
}

// HashHex is the hex SHA-256 of secret, as the tokens file holds it.
func HashHex(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Identity is who made a request, as the event log names them.
type Identity struct {
	Name string `json:"name"`
	Role Role   `json:"-"`
	// Cert is the verified client certificate's subject CN, if one was presented.
	Cert string `json:"cert,omitempty"`
	// session is set when the request came with the dashboard's cookie.
	session *session
}

func (id Identity) String() string {
	s := id.Name + " (" + id.Role.String()
	if id.Cert != "" {
		s += ", client cert CN=" + id.Cert
	}
	return s + ")"
}

// session is a browser's login, made from a token by /?token=.
type session struct {
	id      Identity
	csrf    string
	expires time.Time
}

// sessions are kept in memory: a restart logs browsers out.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

const (
	sessionCookie = "headroom_session"
	csrfHeader    = "X-Headroom-CSRF"
	sessionTTL    = 12 * time.Hour
	maxSessions   = 10000
)

func (s *sessions) create(id Identity, tok Token, now time.Time) (string, *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*session{}
	}
	if len(s.m) >= maxSessions {
		for k, v := range s.m {
			if !now.Before(v.expires) || len(s.m) >= maxSessions {
				delete(s.m, k)
			}
		}
	}
	exp := now.Add(sessionTTL)
	if !tok.Expires.IsZero() && tok.Expires.Before(exp) {
		exp = tok.Expires
	}
	key := NewSecret()
	ss := &session{id: id, csrf: NewSecret(), expires: exp}
	s.m[key] = ss
	return key, ss
}

func (s *sessions) get(key string, now time.Time) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[key]
	if !ok {
		return nil, false
	}
	if !now.Before(ss.expires) {
		delete(s.m, key)
		return nil, false
	}
	return ss, true
}

func (s *sessions) drop(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
