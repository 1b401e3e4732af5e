package main

// The metrics endpoint under a flood of wrong passwords: a valid scrape
// still gets through in time (the metrics server alone, no session).

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestMetricsWrongPasswordFlood: while 600 clients on loopback send wrong
// passwords as fast as they are answered, each a new one (none cached), a
// scrape with the right password (one that passed before the flood, as
// Prometheus's has), every half second, succeeds within 1 s.
// Unprivileged: the metrics server alone, with no session behind it.
func TestMetricsWrongPasswordFlood(t *testing.T) {
	const (
		flooders      = 600
		floodFor      = 10 * time.Second
		scrapeEvery   = 500 * time.Millisecond
		scrapeLimit   = time.Second
		clientTimeout = 5 * time.Second
	)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost) // htpasswd -nBC 10
	if err != nil {
		t.Fatal(err)
	}
	// A second user with a cheap hash: wrong passwords for it fill
	// exporter-toolkit's cache of 100 results fast, and push the valid
	// scraper's result out of it within a second or two.
	cheap, err := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, fmt.Appendf(nil, "basic_auth_users:\n  prometheus: %s\n  cheap: %s\n", hash, cheap), 0o600); err != nil {
		t.Fatal(err)
	}
	what, err := checkWebConfig(webConfig)
	if err != nil || what != "basic auth" {
		t.Fatalf("checkWebConfig: %q, %v; want \"basic auth\"", what, err)
	}
	addr := pmAddr(t)
	srv, err := startMetrics(addr, webConfig, what)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + addr + "/metrics"

	get := func(client *http.Client, user, pass string) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.SetBasicAuth(user, pass)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	valid := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{}}
	defer valid.CloseIdleConnections()
	// Prometheus has scraped once before the flood starts.
	if code, err := get(valid, "prometheus", "s3cret"); err != nil || code != http.StatusOK {
		t.Fatalf("first scrape: %d %v", code, err)
	}

	var (
		wg                  sync.WaitGroup
		unauthorized, other atomic.Int64
		tooMany, failed     atomic.Int64
		stop                = make(chan struct{})
	)
	for i := range flooders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				user := "prometheus"
				if i%2 == 1 {
					user = "cheap"
				}
				code, err := get(client, user, fmt.Sprintf("wrong-%d-%d", i, j))
				switch {
				case err != nil:
					failed.Add(1)
					time.Sleep(10 * time.Millisecond)
				case code == http.StatusUnauthorized:
					unauthorized.Add(1)
				case code == http.StatusTooManyRequests:
					tooMany.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	var worst time.Duration
	scrapes := 0
	for start := time.Now(); time.Since(start) < floodFor; {
		time.Sleep(scrapeEvery)
		t0 := time.Now()
		code, err := get(valid, "prometheus", "s3cret")
		took := time.Since(t0)
		worst = max(worst, took)
		scrapes++
		if err != nil || code != http.StatusOK || took > scrapeLimit {
			t.Errorf("scrape %d, %.1f s into the flood: status %d, error %v, took %v; want 200 within %v",
				scrapes, time.Since(start).Seconds(), code, err, took.Round(time.Millisecond), scrapeLimit)
		}
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(clientTimeout + 5*time.Second):
		t.Fatal("the flooders did not stop")
	}
	t.Logf("%d valid scrapes, slowest %v; flood: %d answered 401, %d 429, %d other, %d failed",
		scrapes, worst.Round(time.Millisecond), unauthorized.Load(), tooMany.Load(), other.Load(), failed.Load())
	if other.Load() != 0 {
		t.Errorf("%d wrong-password requests got neither 401 nor 429", other.Load())
	}
}

// TestAuthGateLanes: with maxInAuthentication requests of unknown
// credentials stuck in authentication, another gets 429 at once, and so
// does a valid password never seen before; one that passed before still
// goes through.
func TestAuthGateLanes(t *testing.T) {
	release := make(chan struct{})
	var inside atomic.Int64
	ok := markAuthenticated(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	gate := newAuthGate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, _, _ := r.BasicAuth(); user == "good" || user == "good2" {
			ok.ServeHTTP(w, r)
			return
		}
		inside.Add(1)
		<-release // a slow bcrypt check
		http.Error(w, "", http.StatusUnauthorized)
	}))
	serve := func(user string) int {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.SetBasicAuth(user, "x")
		rec := httptest.NewRecorder()
		gate.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := serve("good"); code != http.StatusOK {
		t.Fatalf("first valid request: %d", code)
	}
	var wg sync.WaitGroup
	for range maxInAuthentication {
		wg.Go(func() {
			if code := serve("bad"); code != http.StatusUnauthorized {
				t.Errorf("stuck request: %d, want 401 once released", code)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); inside.Load() < maxInAuthentication; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in authentication, want %d", inside.Load(), maxInAuthentication)
		}
	}
	for user, want := range map[string]int{"bad": http.StatusTooManyRequests, "good2": http.StatusTooManyRequests, "good": http.StatusOK} {
		if code := serve(user); code != want {
			t.Errorf("%s with the unknown lane full: %d, want %d", user, code, want)
		}
	}
	close(release)
	wg.Wait()
}
