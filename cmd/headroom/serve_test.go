package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/headroom/headroom/internal/demo"
	"github.com/headroom/headroom/internal/server"
)

// certs makes a CA and, signed by it, a server certificate for 127.0.0.1 and a
// client certificate with CN "ops-laptop", as PEM files in dir.
func certs(t *testing.T, dir string) (caPEM []byte, client tls.Certificate) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	sc, sk := issue("headroom", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "tls.crt"), sc, 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), sk, 0o600)
	cc, ck := issue("ops-laptop", x509.ExtKeyUsageClientAuth, nil)
	client, err = tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	return caPEM, client
}

func TestServeAPIWithTLSAndClientCerts(t *testing.T) {
	d, err := demo.New(demo.Options{Dir: t.TempDir(), Hosts: 2, VMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dir := t.TempDir()
	caPEM, client := certs(t, dir)
	secret := server.NewSecret()
	tokens := "tokens:\n  - name: alice\n    role: operator\n    sha256: " + server.HashHex(secret) + "\n"
	os.WriteFile(filepath.Join(dir, "tokens.yaml"), []byte(tokens), 0o600)
	cfg := d.Config
	cfg.Listen = "127.0.0.1:0"
	cfg.API.TokensFile = filepath.Join(dir, "tokens.yaml")
	cfg.API.TLSCert, cfg.API.TLSKey = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cfg.API.ClientCA = filepath.Join(dir, "ca.pem")
	var logs strings.Builder
	srv, err := serveAPI(d.Controller, d.Log, cfg, nil, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("URL %s, want https", srv.URL)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the token is in the log")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	session := func(withCert bool) (map[string]string, int) {
		tc := &tls.Config{RootCAs: pool}
		if withCert {
			tc.Certificates = []tls.Certificate{client}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		req, _ := http.NewRequest("GET", srv.URL+"/api/session", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]string
		json.NewDecoder(resp.Body).Decode(&m)
		return m, resp.StatusCode
	}
	if m, code := session(true); code != http.StatusOK || m["name"] != "alice" || m["cert"] != "ops-laptop" {
		t.Errorf("with a client cert: %d %v, want alice with cert ops-laptop", code, m)
	}
	if m, code := session(false); code != http.StatusOK || m["cert"] != "" {
		t.Errorf("without a client cert (optional): %d %v", code, m)
	}
	// Plain HTTP to the TLS port gets nothing useful.
	if resp, err := http.Get(strings.Replace(srv.URL, "https", "http", 1) + "/healthz"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered %q", b)
		}
	}

	// require_client_cert: no handshake without one.
	cfg.API.RequireClientCert = true
	srv2, err := serveAPI(d.Controller, d.Log, cfg, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := c.Get(srv2.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("required client cert: a client without one got %s", resp.Status)
	}
}

func TestServeAPIWithoutTokensFileMakesAPrivateToken(t *testing.T) {
	d, err := demo.New(demo.Options{Dir: t.TempDir(), Hosts: 2, VMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg := d.Config
	cfg.Listen = "127.0.0.1:0"
	var logs strings.Builder
	srv, err := serveAPI(d.Controller, d.Log, cfg, nil, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	path := cfg.EventLog + ".token"
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	secret := strings.TrimSpace(string(b))
	if strings.Contains(logs.String(), secret) || !strings.Contains(logs.String(), path) {
		t.Errorf("log %q: want the path, not the token", logs.String())
	}
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/state", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(secret); code != http.StatusOK {
		t.Errorf("the run's token: %d", code)
	}
	if code := get(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	// headroom approve finds the same token beside the log and is let in: a VM
	// with no pending move is then refused by the controller, not by the API.
	t.Setenv("HEADROOM_TOKEN", "")
	if got := apiToken("", cfg); got != secret {
		t.Errorf("apiToken read %q from the token file", got)
	}
	approve := func(args ...string) error {
		cmd := newApproveCmd()
		cmd.SetArgs(append([]string{"nobody", "--api", srv.URL}, args...))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		return cmd.Execute()
	}
	if err := approve("--token", secret); err == nil || strings.Contains(err.Error(), "401") {
		t.Errorf("approve with the run's token: %v, want a refusal that is not 401", err)
	}
	if err := approve(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("approve without a token: %v, want 401", err)
	}
}

func TestTokenCommand(t *testing.T) {
	out, err := run("token", "--name", "alice", "--role", "operator", "--valid", "24h")
	if err != nil {
		t.Fatal(err)
	}
	var secret string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "token: "); ok {
			secret = v
		}
	}
	entry := "tokens:\n" + out[strings.Index(out, "  - name:"):]
	ts, err := server.ParseTokens([]byte(entry), "printed entry")
	if err != nil {
		t.Fatalf("the printed entry does not parse: %v\n%s", err, out)
	}
	tok, ok := ts.Check(secret, time.Now())
	if !ok || tok.Name != "alice" || tok.Role != server.Operator || tok.Expires.IsZero() {
		t.Errorf("printed token checks as %+v %v", tok, ok)
	}
	if _, err := run("token", "--name", "x", "--role", "root"); err == nil {
		t.Error("role root accepted")
	}
}
