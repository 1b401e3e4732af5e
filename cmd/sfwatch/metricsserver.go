package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/sfwatch/sfwatch/internal/metrics"
)

// defaultMetricsAddr is loopback only: exposing metrics to the network
// takes an explicit --metrics-addr.
const defaultMetricsAddr = "127.0.0.1:9464"

// maxConcurrentScrapes keeps a scrape storm from competing with the
// consumer for CPU; extra scrapes get 503.
const maxConcurrentScrapes = 4

// metricsServer serves /metrics while a session runs.
type metricsServer struct {
	exporter *metrics.Exporter
	server   *http.Server
	done     chan error
}

// startMetrics binds addr first, so that a busy port fails before anything
// is started, then serves in the background.
func startMetrics(addr, webConfig string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	exp := metrics.New(versionString())
	mux := http.NewServeMux()
	mux.Handle("/metrics", exp.Handler(maxConcurrentScrapes))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "sfwatch: metrics at /metrics")
	})
	m := &metricsServer{
		exporter: exp,
		server: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			WriteTimeout:      30 * time.Second, // Prometheus' default scrape timeout is 10s
			IdleTimeout:       2 * time.Minute,
		},
		done: make(chan error, 1),
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebConfigFile: &webConfig}
	if webConfig != "" {
		// Fail now on a bad file, not at the first scrape.
		if err := web.Validate(webConfig); err != nil {
			ln.Close()
			return nil, fmt.Errorf("reading --web-config %s: %w", webConfig, err)
		}
	}
	go func() { m.done <- web.Serve(ln, m.server, flags, logger) }()
	fmt.Fprintf(os.Stderr, "sfwatch: serving metrics on %s/metrics\n", ln.Addr())
	return m, nil
}

// Close stops accepting scrapes and lets running ones finish (bounded).
func (m *metricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.server.Shutdown(ctx)
	if serveErr := <-m.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}
