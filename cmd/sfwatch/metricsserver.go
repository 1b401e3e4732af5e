package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"

	"github.com/sfwatch/sfwatch/internal/metrics"
)

// defaultMetricsAddr is loopback only: exposing metrics to the network
// takes an explicit --metrics-addr.
const defaultMetricsAddr = "127.0.0.1:9464"

const (
	// maxConcurrentScrapes keeps a scrape storm from competing with the
	// consumer for CPU; extra scrapes get 503.
	maxConcurrentScrapes = 4
	// scrapeTimeout bounds one scrape (Prometheus' default scrape timeout
	// is 10s); a scrape reads the kernel's counters and takes far less
	// (README, What it costs).
	scrapeTimeout = 10 * time.Second
	// shutdownTimeout bounds how long running scrapes may delay exit.
	shutdownTimeout = 5 * time.Second
	// maxInAuthentication bounds the requests in basic authentication at
	// once, for credentials not yet seen to pass and, apart, for those
	// that passed before; more get 429 at once (see authGate).
	maxInAuthentication = 4
	// maxRememberedCredentials bounds the credentials authGate remembers.
	maxRememberedCredentials = 64
)

// metricsServer serves /metrics while a session runs.
type metricsServer struct {
	exporter *metrics.Exporter
	server   *http.Server
	done     chan error
}

// maxWebConfigSize bounds the web config file: a real one is a few hundred
// bytes, and a path to the wrong file must not be read until memory runs out.
const maxWebConfigSize = 1 << 20

// checkWebConfig reads an exporter-toolkit web config file (TLS, basic
// auth) and says what is wrong with it, on one line; or else what it sets:
// "TLS", "basic auth" or both.
func checkWebConfig(path string) (what string, err error) {
	data, err := readConfigFile(path, maxWebConfigSize)
	if err != nil {
		return "", err
	}
	if err := web.Validate(path); err != nil {
		// YAML errors come as several indented lines.
		lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
		for i := range lines {
			lines[i] = strings.TrimSpace(lines[i])
		}
		return "", errors.New(strings.Join(lines, " "))
	}
	// Validated above: strict YAML of exporter-toolkit's own type.
	var c web.Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return "", err
	}
	var set []string
	if c.TLSConfig.IsEnabled() {
		set = append(set, "TLS")
	}
	if len(c.Users) > 0 {
		set = append(set, "basic auth")
	}
	if len(set) == 0 {
		return "", errors.New("configures neither TLS nor basic auth; remove --web-config or add tls_server_config or basic_auth_users")
	}
	return strings.Join(set, " and "), nil
}

// readConfigFile reads the regular file at path, at most limit bytes. It
// opens without blocking (a FIFO would wait for a writer forever) and
// refuses anything but a regular file (a device such as /dev/zero never
// ends).
func readConfigFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s); give the path of a YAML file", fileKind(fi.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes; a web config is a short YAML file", limit)
	}
	return data, nil
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}

// startMetrics binds addr first, so that a busy port fails before anything
// is started, then serves in the background. webConfig has been checked
// with checkWebConfig, which said it sets webWhat.
func startMetrics(addr, webConfig, webWhat string) (*metricsServer, error) {
	exp := metrics.New(versionNumber())
	m, err := serveMetrics(addr, webConfig, webWhat, exp.Handler(maxConcurrentScrapes, scrapeTimeout))
	if err != nil {
		return nil, err
	}
	m.exporter = exp
	return m, nil
}

// serveMetrics serves handler at /metrics, as startMetrics says.
func serveMetrics(addr, webConfig, webWhat string, handler http.Handler) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", handler)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "sfwatch: metrics at /metrics")
	})
	m := &metricsServer{
		server: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      scrapeTimeout + 5*time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
		},
		done: make(chan error, 1),
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// net/http's own messages (a TLS handshake error per plain-HTTP or
	// port-scanner connection) would fill stderr at the rate of whoever
	// connects: they go below the level that is printed.
	m.server.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	if webConfig != "" {
		// web.Serve puts its own handler (basic auth, then ours) in
		// server.Handler and serves; Serve calls BaseContext once, after
		// that and before the first connection: the one moment to put
		// the gate in front of authentication.
		var once sync.Once
		m.server.Handler = markAuthenticated(mux)
		m.server.BaseContext = func(net.Listener) context.Context {
			once.Do(func() { m.server.Handler = newAuthGate(m.server.Handler) })
			return context.Background()
		}
	}
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebConfigFile: &webConfig}
	go func() { m.done <- web.Serve(ln, m.server, flags, logger) }()
	how := ""
	if webConfig != "" {
		how = " (" + webWhat + " as in " + webConfig + ")"
	}
	fmt.Fprintf(os.Stderr, "sfwatch: serving metrics on %s/metrics%s\n", ln.Addr(), how)
	return m, nil
}

// Close stops accepting scrapes, lets running ones finish (at most
// shutdownTimeout), then closes every connection: the port is free when
// it returns.
func (m *metricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := m.server.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, m.server.Close())
	}
	if serveErr := <-m.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// authGate stands in front of exporter-toolkit's basic authentication,
// which checks bcrypt hashes one at a time under a global lock and caches
// 100 results: a flood of wrong passwords would queue a valid scrape behind
// every one of them, and push its result out of the cache. At most
// maxInAuthentication requests whose credentials have not passed before
// are in authentication at once, and as many whose credentials have (a
// Prometheus that scraped once); the rest get 429 at once. So a valid
// scrape waits for at most 2*maxInAuthentication bcrypt checks.
type authGate struct {
	next           http.Handler
	unknown, known chan struct{} // slots

	mu     sync.Mutex
	passed map[[sha256.Size]byte]bool // hashes of Authorization headers that got through
}

func newAuthGate(next http.Handler) *authGate {
	return &authGate{
		next:    next,
		unknown: make(chan struct{}, maxInAuthentication),
		known:   make(chan struct{}, maxInAuthentication),
		passed:  make(map[[sha256.Size]byte]bool),
	}
}

// authenticatedKey is the context key of the flag that markAuthenticated
// sets for authGate.
type authenticatedKey struct{}

// markAuthenticated wraps the handler behind authentication: a request
// that reaches it has passed.
func markAuthenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if passed, ok := r.Context().Value(authenticatedKey{}).(*bool); ok {
			*passed = true
		}
		next.ServeHTTP(w, r)
	})
}

func (g *authGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := sha256.Sum256([]byte(r.Header.Get("Authorization")))
	g.mu.Lock()
	slots := g.unknown
	if g.passed[key] {
		slots = g.known
	}
	g.mu.Unlock()
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "sfwatch: too many requests in authentication", http.StatusTooManyRequests)
		return
	}
	passed := false
	g.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authenticatedKey{}, &passed)))
	if passed && slots == g.unknown {
		g.mu.Lock()
		if len(g.passed) >= maxRememberedCredentials {
			clear(g.passed)
		}
		g.passed[key] = true
		g.mu.Unlock()
	}
}
