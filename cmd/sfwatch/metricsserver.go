package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

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
	// is 10s); a scrape reads three small BPF maps and takes about a ms.
	scrapeTimeout = 10 * time.Second
	// shutdownTimeout bounds how long running scrapes may delay exit.
	shutdownTimeout = 5 * time.Second
)

// metricsServer serves /metrics while a session runs.
type metricsServer struct {
	exporter *metrics.Exporter
	server   *http.Server
	done     chan error
}

// checkWebConfig reads an exporter-toolkit web config file (TLS, basic
// auth) and says what is wrong with it, on one line.
func checkWebConfig(path string) error {
	err := web.Validate(path)
	if err == nil {
		return nil
	}
	// YAML errors come as several indented lines.
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return errors.New(strings.Join(lines, " "))
}

// startMetrics binds addr first, so that a busy port fails before anything
// is started, then serves in the background. webConfig has been checked
// with checkWebConfig.
func startMetrics(addr, webConfig string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	exp := metrics.New(versionNumber())
	mux := http.NewServeMux()
	mux.Handle("/metrics", exp.Handler(maxConcurrentScrapes, scrapeTimeout))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "sfwatch: metrics at /metrics")
	})
	m := &metricsServer{
		exporter: exp,
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
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebConfigFile: &webConfig}
	go func() { m.done <- web.Serve(ln, m.server, flags, logger) }()
	how := ""
	if webConfig != "" {
		how = " (TLS and authentication as in " + webConfig + ")"
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
