// Package metrics exports sfwatch's totals to Prometheus. Calls, bytes,
// results, offsets and the duration histogram are read from the kernel's
// per-CPU maps at scrape time, so they are exact whatever happens to the
// event stream (sampling, a full ring buffer). Only delivered events and
// violations, which need the events themselves, are read from the
// session's aggregate of them.
package metrics

import (
	"math"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
)

const namespace = "sfwatch"

// Source gives the kernel's totals; the session's counters.Reader is one.
type Source interface {
	Snapshot() (counters.Snapshot, error)
}

// Histogram bounds: 2^10 ns (1 µs) to 2^34 ns (17 s), one bucket per power
// of two as the kernel counts them; shorter calls fall in the first bucket.
const (
	firstBucket = 10
	lastBucket  = 34
)

var (
	callsDesc = prometheus.NewDesc(namespace+"_sendfile_calls_total",
		"sendfile calls by result (ok, short, eof, empty, error) and errno (for errors).", []string{"result", "errno"}, nil)
	bytesDesc = prometheus.NewDesc(namespace+"_sendfile_bytes_total",
		"Bytes transferred by sendfile (sum of positive return values).", nil, nil)
	durationDesc = prometheus.NewDesc(namespace+"_sendfile_duration_seconds",
		"Time from sendfile entry to exit.", nil, nil)
	offsetDesc = prometheus.NewDesc(namespace+"_sendfile_offset_total",
		"sendfile calls by kind of offset argument.", []string{"kind"}, nil)
	lostDesc = prometheus.NewDesc(namespace+"_events_lost_total",
		"Events dropped because the ring buffer was full; totals stay exact.", nil, nil)
	sampledDesc = prometheus.NewDesc(namespace+"_events_sampled_out_total",
		"Events not emitted because of --sample; totals stay exact.", nil, nil)
	violationsDesc = prometheus.NewDesc(namespace+"_sendfile_violations_total",
		"Delivered events that broke a rule of sendfile's contract.", []string{"rule"}, nil)
	restartsDesc = prometheus.NewDesc(namespace+"_sendfile_restarts_total",
		"sendfile calls interrupted by a signal before any byte moved and restarted by the kernel (SA_RESTART); not in calls. Those that returned EINTR are calls with errno EINTR.", nil, nil)
	deliveredDesc = prometheus.NewDesc(namespace+"_events_delivered_total",
		"Events delivered to user space and validated.", nil, nil)
	escapedDesc = prometheus.NewDesc(namespace+"_tasks_escaped_total",
		"Tasks of the run that moved out of its group; sfwatch follows them, and their calls are counted.", nil, nil)
	skippedDesc = prometheus.NewDesc(namespace+"_programs_skipped_total",
		"Times the kernel did not run one of sfwatch's programs (its recursion misses); not zero, calls may be missing from every sendfile total, except for sched_process_exit, whose skips cost no call.", []string{"program"}, nil)
)

// Exporter is a prometheus.Collector of one session's totals.
type Exporter struct {
	registry *prometheus.Registry
	childUp  prometheus.Gauge

	// mu guards src and agg; Collect holds it for reading while it takes
	// a snapshot, so SetSource(nil) returns only once no scrape uses the
	// old source any more (the tracer can then be closed).
	mu  sync.RWMutex
	src Source             // nil until tracing starts and after it stops
	agg *events.Aggregator // nil until tracing starts; kept after, the final counts

	// okMu guards lastOK: see okCalls.
	okMu   sync.Mutex
	lastOK uint64
}

// New returns an exporter with its own registry (never the global one).
func New(version string) *Exporter {
	x := &Exporter{registry: prometheus.NewRegistry()}
	x.childUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "child_up",
		Help: "1 while the traced command (run) or group (attach) is being watched."})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help: "sfwatch's version.", ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	buildInfo.Set(1)
	x.registry.MustRegister(x, x.childUp, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return x
}

// SetSource points the exporter at the kernel's totals; nil stops reading
// them. It waits for scrapes that are reading the previous source.
func (x *Exporter) SetSource(src Source) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.src = src
}

// SetEvents points the exporter at the session's aggregate of delivered
// events, read at every scrape from then on.
func (x *Exporter) SetEvents(agg *events.Aggregator) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.agg = agg
}

// SetChildUp sets sfwatch_child_up.
func (x *Exporter) SetChildUp(up bool) {
	if up {
		x.childUp.Set(1)
	} else {
		x.childUp.Set(0)
	}
}

// Handler serves /metrics for this exporter's registry. At most limit
// scrapes run at once; more get 503 rather than piling up. A scrape that
// takes longer than timeout gets 503 too.
func (x *Exporter) Handler(limit int, timeout time.Duration) http.Handler {
	return promhttp.HandlerFor(x.registry, promhttp.HandlerOpts{
		MaxRequestsInFlight: limit,
		Timeout:             timeout,
		ErrorHandling:       promhttp.ContinueOnError,
	})
}

// Registry is the exporter's own registry (for tests and other handlers).
func (x *Exporter) Registry() *prometheus.Registry { return x.registry }

// Describe is part of prometheus.Collector.
func (x *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{callsDesc, bytesDesc, durationDesc, offsetDesc, lostDesc, sampledDesc, restartsDesc, violationsDesc, deliveredDesc, skippedDesc, escapedDesc} {
		ch <- d
	}
}

// Collect reads the kernel's totals once per scrape.
func (x *Exporter) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	x.mu.RLock()
	defer x.mu.RUnlock()
	var delivered uint64
	if x.agg != nil {
		delivered = x.agg.Delivered()
		for rule, n := range x.agg.ViolationsByRule() {
			counter(violationsDesc, n, rule)
		}
	}
	counter(deliveredDesc, delivered)
	if x.src == nil {
		return
	}
	s, err := x.src.Snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(callsDesc, err)
		return
	}
	t := &s.Totals
	counter(callsDesc, x.okCalls(t), "ok", "")
	counter(callsDesc, t.Short, "short", "")
	counter(callsDesc, t.EOF, "eof", "")
	counter(callsDesc, t.Empty, "empty", "")
	for errno, n := range s.ErrnoCounts {
		counter(callsDesc, n, "error", events.ErrnoName(errno))
	}
	counter(bytesDesc, t.Bytes)
	counter(offsetDesc, t.OffsetNull, "null")
	counter(offsetDesc, t.OffsetPtr, "pointer")
	counter(lostDesc, t.Lost)
	counter(sampledDesc, t.SampledOut)
	counter(restartsDesc, t.Restarts)
	counter(escapedDesc, t.Escaped)
	for prog, n := range s.Skipped {
		counter(skippedDesc, n, prog)
	}
	counter(skippedDesc, s.MissedExits, loader.ExitProgram)

	// The count is the histogram's own total, not the calls counter: the
	// two maps are read one after the other while calls go on, and a
	// bucket must never exceed the count. Once calls stop they are equal.
	bkts, count := buckets(&s.LatencyLog2)
	ch <- prometheus.MustNewConstHistogram(durationDesc, count, float64(t.DurationNs)/1e9, bkts)
}

// okCalls is counters.Totals.OK, never reported lower than in an earlier
// scrape (a counter that goes down reads as a reset to Prometheus). It is
// exact when calls stop, except after a torn read that counted as ok a call
// which then failed: that one is absorbed by the next complete call.
func (x *Exporter) okCalls(t *counters.Totals) uint64 {
	ok := t.OK()
	x.okMu.Lock()
	defer x.okMu.Unlock()
	x.lastOK = max(x.lastOK, ok)
	return x.lastOK
}

// buckets turns the kernel's log2 histogram (bucket i: [2^(i-1), 2^i) ns)
// into Prometheus' cumulative buckets with upper bounds in seconds (le
// 2^i ns holds kernel buckets 0..i), and returns the total count.
func buckets(log2 *[64]uint64) (map[float64]uint64, uint64) {
	out := make(map[float64]uint64, lastBucket-firstBucket+1)
	var cum uint64
	for i, n := range log2 {
		cum += n
		if i >= firstBucket && i <= lastBucket {
			out[math.Ldexp(1, i)/1e9] = cum
		}
	}
	return out, cum
}
