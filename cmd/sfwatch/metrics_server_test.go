package main

// The metrics endpoint: loopback only by default, TLS and basic auth from a
// web config, a web config that cannot be used refused as bad usage, a busy
// port refused before anything starts, and the port free again after sfwatch
// exits.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestMetricsLoopbackByDefault: --metrics alone listens on 127.0.0.1:9464
// and nowhere else; a non-loopback address of this machine is refused.
func TestMetricsLoopbackByDefault(t *testing.T) {
	testenv.RequirePrivileged(t)
	if ln, err := net.Listen("tcp", defaultMetricsAddr); err != nil {
		testenv.SkipOrFail(t, "port of --metrics busy: %v", err)
	} else {
		ln.Close()
	}
	ready := filepath.Join(t.TempDir(), "ready")
	p := pmStart(t, "run", "--metrics", "--quiet", "--", os.Args[0], "pm-calls", "1", "10", ready)
	w := pmReady(t, p, ready)
	if !strings.Contains(p.stderr.String(), "sfwatch: serving metrics on 127.0.0.1:9464/metrics\n") {
		t.Errorf("no notice of the loopback address:\n%s", p.stderr.String())
	}
	if got := pmListeners(t, p.pid()); len(got) != 1 || got[0] != "0100007F:24F8" {
		t.Errorf("sfwatch listens on %v (/proc/net/tcp notation), want only 0100007F:24F8 (127.0.0.1:9464)", got)
	}
	m := pmScrapeDrained(t, p, nil, "http://127.0.0.1:9464/metrics")
	checkWorkloadTotals(t, m, w)
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range ifaddrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLoopback() || ipnet.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipnet.IP.String(), "9464"), 2*time.Second)
		if err == nil {
			c.Close()
			t.Errorf("connected to %s:9464: --metrics must listen on loopback only", ipnet.IP)
		}
	}
	t.Logf("refused on %d non-loopback addresses", tried)
	r := p.stop(t, syscall.SIGTERM)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	pmAssertPortFree(t, defaultMetricsAddr)
}

// TestMetricsTLSAndBasicAuth: with a web config, metrics are served over
// TLS only, to a client that trusts the certificate and gives the right
// password; plain HTTP, no password, a wrong one or an untrusting client
// get nothing. The port is free after sfwatch exits.
func TestMetricsTLSAndBasicAuth(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	certFile, keyFile, pool := pmCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	yml := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", certFile, keyFile, hash)
	if err := os.WriteFile(webConfig, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := pmAddr(t)
	ready := filepath.Join(dir, "ready")
	p := pmStart(t, "run", "--metrics-addr", addr, "--web-config", webConfig, "--quiet",
		"--", os.Args[0], "pm-calls", "1", "1000", ready)
	w := pmReady(t, p, ready)

	trusting := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	get := func(tr *http.Transport, url, user, pass string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	url := "https://" + addr + "/metrics"

	// Wait for the consumer, then check the totals through TLS and auth.
	p.waitFor(t, "the consumer over TLS", 30*time.Second, func() bool {
		resp, body, err := get(trusting, url, "prometheus", "s3cret")
		if err != nil || resp.StatusCode != 200 {
			return false
		}
		fams, err := pmParse(body)
		return err == nil && fams["sfwatch_sendfile_calls_total"] != nil && fams.drained(t)
	})
	resp, body, err := get(trusting, url, "prometheus", "s3cret")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape with TLS and the password: %v %v", err, resp)
	}
	if resp.TLS == nil {
		t.Error("response not over TLS")
	}
	fams, err := pmParse(body)
	if err != nil {
		t.Fatal(err)
	}
	checkWorkloadTotals(t, fams, w)

	for _, c := range []struct{ user, pass string }{{"", ""}, {"prometheus", "wrong"}, {"root", "s3cret"}} {
		resp, body, err := get(trusting, url, c.user, c.pass)
		if err != nil {
			t.Errorf("user %q: %v", c.user, err)
			continue
		}
		if resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, []byte("sfwatch_sendfile")) {
			t.Errorf("user %q password %q: %s, want 401 and no metrics", c.user, c.pass, resp.Status)
		}
	}
	// A client that does not trust the certificate.
	if _, _, err := get(&http.Transport{DisableKeepAlives: true}, url, "prometheus", "s3cret"); err == nil {
		t.Error("a client with the system's roots trusted the self-signed certificate")
	}
	// Plain HTTP on the TLS port: no metrics (Go answers 400).
	if resp, body, err := get(&http.Transport{DisableKeepAlives: true}, "http://"+addr+"/metrics", "prometheus", "s3cret"); err == nil &&
		(resp.StatusCode == 200 || bytes.Contains(body, []byte("sfwatch_sendfile"))) {
		t.Errorf("plain HTTP got %s and %d bytes: TLS is not enforced", resp.Status, len(body))
	}

	r := p.stop(t, syscall.SIGTERM)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	if want := "/metrics (TLS and basic auth as in " + webConfig + ")\n"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	if strings.Contains(r.stderr, "TLS handshake error") {
		t.Errorf("a bad client's handshake reached stderr:\n%s", r.stderr)
	}
	pmAssertPortFree(t, addr)
}

// TestMetricsBadWebConfig: a web config that cannot be used is bad usage:
// one line on stderr, exit 2, before anything is created or listens. It
// needs no privilege: flags are checked before anything else.
func TestMetricsBadWebConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cases := map[string]string{
		"missing file":       filepath.Join(dir, "nonexistent.yml"),
		"not yaml":           write("notyaml.yml", "tls_server_config: [\n"),
		"unknown fields":     write("fields.yml", "foo: 1\nbar: 2\n"),
		"cert without key":   write("nokey.yml", "tls_server_config:\n  cert_file: x.pem\n"),
		"missing cert files": write("nofiles.yml", "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem\n"),
		"bad password hash":  write("hash.yml", "basic_auth_users:\n  prometheus: notbcrypt\n"),
		// Not a regular file: /dev/zero would be read until memory ran
		// out, a FIFO would block forever, a directory is no YAML.
		"device":    "/dev/zero",
		"fifo":      fifo(t, filepath.Join(dir, "fifo.yml")),
		"directory": dir,
		"too large": write("large.yml", "# "+strings.Repeat("x", 1<<20)+"\n"),
		// Valid YAML that configures nothing would serve plain HTTP
		// without a password while saying otherwise.
		"empty":         write("empty.yml", ""),
		"null sections": write("null.yml", "tls_server_config: null\nbasic_auth_users: null\n"),
	}
	wantWebConfigError := map[string]string{
		"device":        "not a regular file (a character device)",
		"fifo":          "not a regular file (a FIFO)",
		"directory":     "not a regular file (a directory)",
		"too large":     "larger than 1048576 bytes",
		"empty":         "configures neither TLS nor basic auth; remove --web-config",
		"null sections": "configures neither TLS nor basic auth; remove --web-config",
	}
	for name, path := range cases {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "events.txt")
			addr := pmAddr(t)
			for _, args := range [][]string{
				{"run", "--metrics-addr", addr, "--web-config", path, "-o", out, "--", "true"},
				{"attach", "--pid", "1", "--metrics", "--web-config", path, "-o", out},
			} {
				r := sfwatch(t, nil, args...)
				if r.code != exitUsage {
					t.Errorf("%s: exit %d, want %d; stderr:\n%s", args[0], r.code, exitUsage, r.stderr)
				}
				lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
				if len(lines) != 1 || !strings.HasPrefix(lines[0], "sfwatch: "+args[0]+": --web-config "+path+": ") {
					t.Errorf("%s: stderr is not one line naming the file:\n%s", args[0], r.stderr)
				}
				if want := wantWebConfigError[name]; !strings.Contains(r.stderr, want) {
					t.Errorf("%s: stderr does not say %q:\n%s", args[0], want, r.stderr)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("%s: -o file created despite the bad web config", args[0])
				}
				pmAssertPortFree(t, addr)
			}
		})
	}
}

// TestMetricsBusyPort: a metrics port in use fails at once, exit 125, one
// line, before the command starts or a file is created.
func TestMetricsBusyPort(t *testing.T) {
	testenv.RequirePrivileged(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	out, marker := filepath.Join(dir, "events.txt"), filepath.Join(dir, "started")
	r := sfwatch(t, nil, "run", "--metrics-addr", ln.Addr().String(), "-o", out, "--", "touch", marker)
	if r.code != exitFailed {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.code, exitFailed, r.stderr)
	}
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "listening for metrics on "+ln.Addr().String()) {
		t.Errorf("stderr:\n%s\nwant one line about the port", r.stderr)
	}
	for _, f := range []string{out, marker} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s exists: something started despite the busy port", filepath.Base(f))
		}
	}
}
