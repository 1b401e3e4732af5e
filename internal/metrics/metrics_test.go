package metrics

import (
	"errors"
	"io"
	"math"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/events"
)

// fakeSource is a Source with a snapshot filled in by the test.
type fakeSource struct {
	mu    sync.Mutex
	snap  counters.Snapshot
	err   error
	reads int
}

func (f *fakeSource) Snapshot() (counters.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.snap, f.err
}

func (f *fakeSource) set(change func(*counters.Totals)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.snap.Totals)
}

// snapshot is a kernel state with a value in every counter: 1000 calls, of
// which 3 short, 5 at end of file, 7 failed (4 EBADF, 2 EPIPE, 1 EINTR),
// the rest complete; and 17 interruptions, restarted.
func snapshot() counters.Snapshot {
	var s counters.Snapshot
	s.Totals = counters.Totals{
		Calls:      1000,
		Bytes:      3_950_000,
		Errors:     7,
		Short:      3,
		EOF:        4,
		Empty:      1,
		OffsetNull: 600,
		OffsetPtr:  400,
		Lost:       11,
		SampledOut: 13,
		Unpaired:   2,
		DurationNs: 2_500_000_000, // 2.5 s
		Restarts:   17,
		Escaped:    29,
	}
	s.ErrnoCounts = map[syscall.Errno]uint64{syscall.EBADF: 4, syscall.EPIPE: 2, syscall.EINTR: 1}
	// 1000 durations: 100 of 0 ns, 200 in [512, 1024) ns (bucket 10), 300
	// in [2^19, 2^20) (bucket 20), 390 in bucket 34, 10 above 2^34 ns
	// (bucket 40: past the last finite bound).
	s.LatencyLog2[0] = 100
	s.LatencyLog2[10] = 200
	s.LatencyLog2[20] = 300
	s.LatencyLog2[34] = 390
	s.LatencyLog2[40] = 10
	s.Skipped = map[string]uint64{"sys_enter_sendfile64": 19, "sys_exit_sendfile64": 23, "signal_deliver": 0}
	s.MissedExits = 31
	return s
}

// gather collects the exporter's registry into families by name.
func gather(t *testing.T, x *Exporter) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := x.Registry().Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	byName := make(map[string]*dto.MetricFamily)
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	return byName
}

// labelsOf renders a metric's labels as k=v,k=v in name order.
func labelsOf(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

// values maps a family's label sets to counter or gauge values.
func values(f *dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			out[labelsOf(m)] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[labelsOf(m)] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestEveryFamilyAndValue(t *testing.T) {
	x := New("v1.2.3")
	src := &fakeSource{snap: snapshot()}
	x.SetSource(src)
	x.SetChildUp(true)
	// Four delivered events, two of them with violations.
	var agg events.Aggregator
	agg.Add(&events.Event{}, events.Verdict{})
	agg.Add(&events.Event{}, events.Verdict{Violations: events.RetOverCount | events.OffsetNotAdvanced})
	agg.Add(&events.Event{}, events.Verdict{Violations: events.RetOverCount})
	agg.Add(&events.Event{}, events.Verdict{Class: events.ClassEmpty}) // its call is the kernel's Empty
	x.SetEvents(&agg)

	fams := gather(t, x)
	want := map[string]map[string]float64{
		"sfwatch_sendfile_calls_total": {
			"errno=,result=ok":         985, // 1000 - 3 - 5 - 7
			"errno=,result=short":      3,
			"errno=,result=eof":        4,
			"errno=,result=empty":      1,
			"errno=EBADF,result=error": 4,
			"errno=EPIPE,result=error": 2,
			"errno=EINTR,result=error": 1,
		},
		"sfwatch_sendfile_bytes_total":     {"": 3_950_000},
		"sfwatch_sendfile_offset_total":    {"kind=null": 600, "kind=pointer": 400},
		"sfwatch_events_lost_total":        {"": 11},
		"sfwatch_events_sampled_out_total": {"": 13},
		"sfwatch_sendfile_restarts_total":  {"": 17},
		"sfwatch_events_delivered_total":   {"": 4},
		"sfwatch_tasks_escaped_total":      {"": 29},
		"sfwatch_programs_skipped_total": {
			"program=sys_enter_sendfile64": 19, "program=sys_exit_sendfile64": 23, "program=signal_deliver": 0,
			"program=sched_process_exit": 31,
		},
		"sfwatch_sendfile_violations_total": {"rule=ret_over_count": 2, "rule=offset_not_advanced": 1},
		"sfwatch_child_up":                  {"": 1},
		"sfwatch_build_info":                {"goversion=" + goVersion(t, fams) + ",version=v1.2.3": 1},
	}
	for name, wantValues := range want {
		f, ok := fams[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		got := values(f)
		for labels, v := range wantValues {
			if g, ok := got[labels]; !ok || g != v {
				t.Errorf("%s{%s} = %v (present %v), want %v", name, labels, g, ok, v)
			}
		}
		for labels := range got {
			if _, ok := wantValues[labels]; !ok {
				t.Errorf("%s{%s}: unexpected series", name, labels)
			}
		}
	}

	// Types: counters end in _total, the rest as documented.
	types := map[string]dto.MetricType{
		"sfwatch_sendfile_calls_total":      dto.MetricType_COUNTER,
		"sfwatch_sendfile_bytes_total":      dto.MetricType_COUNTER,
		"sfwatch_sendfile_offset_total":     dto.MetricType_COUNTER,
		"sfwatch_sendfile_violations_total": dto.MetricType_COUNTER,
		"sfwatch_events_lost_total":         dto.MetricType_COUNTER,
		"sfwatch_events_delivered_total":    dto.MetricType_COUNTER,
		"sfwatch_events_sampled_out_total":  dto.MetricType_COUNTER,
		"sfwatch_programs_skipped_total":    dto.MetricType_COUNTER,
		"sfwatch_tasks_escaped_total":       dto.MetricType_COUNTER,
		"sfwatch_sendfile_duration_seconds": dto.MetricType_HISTOGRAM,
		"sfwatch_child_up":                  dto.MetricType_GAUGE,
		"sfwatch_build_info":                dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), typ)
		}
	}
	// The Go and process collectors: goroutines, memory, fds.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("%s missing (Go or process collector)", name)
		}
	}

	h := fams["sfwatch_sendfile_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 1000 {
		t.Errorf("histogram count %d, want 1000", h.GetSampleCount())
	}
	if h.GetSampleSum() != 2.5 {
		t.Errorf("histogram sum %v, want 2.5 (seconds)", h.GetSampleSum())
	}

	// A second scrape reads the kernel again: nothing is cached.
	before := src.reads
	gather(t, x)
	if src.reads != before+1 {
		t.Errorf("a scrape read the source %d times, want once", src.reads-before)
	}
}

func goVersion(t *testing.T, fams map[string]*dto.MetricFamily) string {
	t.Helper()
	for _, m := range fams["sfwatch_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "goversion" {
				return l.GetValue()
			}
		}
	}
	t.Fatal("sfwatch_build_info has no goversion label")
	return ""
}

// TestHistogramBuckets: kernel bucket i counts [2^(i-1), 2^i) ns, so it
// belongs below the bound le = 2^i ns; the cumulative counts follow.
func TestHistogramBuckets(t *testing.T) {
	x := New("test")
	x.SetSource(&fakeSource{snap: snapshot()})
	h := gather(t, x)["sfwatch_sendfile_duration_seconds"].GetMetric()[0].GetHistogram()

	var bounds []float64
	got := make(map[float64]uint64)
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		got[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if !slices.IsSorted(bounds) {
		t.Errorf("bounds not sorted: %v", bounds)
	}
	if len(bounds) != lastBucket-firstBucket+1 {
		t.Errorf("%d finite buckets, want %d (2^%d..2^%d ns)", len(bounds), lastBucket-firstBucket+1, firstBucket, lastBucket)
	}
	for i := firstBucket; i <= lastBucket; i++ {
		le := math.Ldexp(1, i) / 1e9
		var want uint64
		switch {
		case i < 20:
			want = 300 // 0 ns and bucket 10
		case i < 34:
			want = 600
		default:
			want = 990 // bucket 40 only in +Inf
		}
		if c, ok := got[le]; !ok || c != want {
			t.Errorf("le=%g (2^%d ns): %d (present %v), want %d", le, i, c, ok, want)
		}
	}
	// Exact bounds as Prometheus shows them.
	for _, le := range []float64{1.024e-06, 2.048e-06, 0.001048576, 17.179869184} {
		if _, ok := got[le]; !ok {
			t.Errorf("no bucket le=%g", le)
		}
	}
}

// TestBucketsFunction checks the mapping on single buckets.
func TestBucketsFunction(t *testing.T) {
	for _, tc := range []struct {
		kernelBucket int
		firstLE      float64 // the smallest bound that counts it
	}{
		{0, 1.024e-6}, {1, 1.024e-6}, {10, 1.024e-6}, {11, 2.048e-6}, {30, math.Ldexp(1, 30) / 1e9}, {34, 17.179869184},
	} {
		var log2 [64]uint64
		log2[tc.kernelBucket] = 1
		b, count := buckets(&log2)
		if count != 1 {
			t.Errorf("bucket %d: count %d, want 1", tc.kernelBucket, count)
		}
		for le, c := range b {
			if want := uint64(0); le >= tc.firstLE {
				want = 1
				if c != want {
					t.Errorf("bucket %d: le=%g has %d, want %d", tc.kernelBucket, le, c, want)
				}
			} else if c != 0 {
				t.Errorf("bucket %d: le=%g has %d, want 0", tc.kernelBucket, le, c)
			}
		}
	}
	// Above the last finite bound: only in +Inf (the count).
	var log2 [64]uint64
	log2[63] = 5
	b, count := buckets(&log2)
	if count != 5 {
		t.Errorf("bucket 63: count %d, want 5", count)
	}
	for le, c := range b {
		if c != 0 {
			t.Errorf("bucket 63: le=%g has %d, want 0", le, c)
		}
	}
}

// TestHistogramCountIsItsOwnTotal: the calls counter and the histogram map
// are read at different moments; the count must come from the buckets so
// that no bucket ever exceeds it.
func TestHistogramCountIsItsOwnTotal(t *testing.T) {
	s := snapshot()
	s.Totals.Calls = 990 // read before 10 more calls landed in the histogram
	x := New("test")
	x.SetSource(&fakeSource{snap: s})
	h := gather(t, x)["sfwatch_sendfile_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 1000 {
		t.Errorf("count %d, want 1000 (the sum of the kernel's buckets)", h.GetSampleCount())
	}
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() > h.GetSampleCount() {
			t.Errorf("bucket le=%g: %d > count %d", b.GetUpperBound(), b.GetCumulativeCount(), h.GetSampleCount())
		}
	}
}

// TestOKNeverWrapsNorDecreases: ok is derived (calls - short - eof -
// errors) from counters read one after the other; a torn read must give
// neither a wrapped uint64 nor a counter that goes down.
func TestOKNeverWrapsNorDecreases(t *testing.T) {
	src := &fakeSource{snap: snapshot()}
	x := New("test")
	x.SetSource(src)
	ok := func() float64 {
		return values(gather(t, x)["sfwatch_sendfile_calls_total"])["errno=,result=ok"]
	}
	if got := ok(); got != 985 {
		t.Fatalf("ok = %v, want 985", got)
	}
	// Torn read: errors counted before their calls.
	src.set(func(t *counters.Totals) { t.Errors = 1000 })
	if got := ok(); got != 985 {
		t.Errorf("ok after a torn read = %v, want 985 (held, neither wrapped nor 0)", got)
	}
	src.set(func(t *counters.Totals) { t.Errors = 7 })
	src.set(func(t *counters.Totals) { t.Calls = 2000 })
	if got := ok(); got != 1985 {
		t.Errorf("ok = %v, want 1985", got)
	}
	// Calls read ahead of their class, then the class catches up: the
	// first read over-counts ok by one, the second must not go back.
	src.set(func(t *counters.Totals) { t.Calls = 2001 })
	if got := ok(); got != 1986 {
		t.Errorf("ok = %v, want 1986", got)
	}
	src.set(func(t *counters.Totals) { t.EOF = 6 })
	if got := ok(); got != 1986 {
		t.Errorf("ok = %v, want 1986 (never lower than before)", got)
	}
}

// TestNoSourceYet: before tracing starts (and after it stops) a scrape
// still works and has no kernel series.
func TestNoSourceYet(t *testing.T) {
	x := New("test")
	fams := gather(t, x)
	if fams["sfwatch_sendfile_calls_total"] != nil {
		t.Error("calls exported without a source")
	}
	for _, name := range []string{"sfwatch_build_info", "sfwatch_child_up", "sfwatch_events_delivered_total", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("%s missing without a source", name)
		}
	}
	if v := values(fams["sfwatch_child_up"])[""]; v != 0 {
		t.Errorf("child_up = %v before start, want 0", v)
	}
	x.SetSource(&fakeSource{snap: snapshot()})
	x.SetSource(nil)
	if gather(t, x)["sfwatch_sendfile_calls_total"] != nil {
		t.Error("calls exported after SetSource(nil)")
	}
}

// TestSnapshotError: a failed read is a scrape error for the kernel
// series, not a crash and not zeros.
func TestSnapshotError(t *testing.T) {
	x := New("test")
	x.SetSource(&fakeSource{err: errors.New("map gone")})
	if _, err := x.Registry().Gather(); err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Errorf("Gather error = %v, want one that says map gone", err)
	}
	// Through the handler (ContinueOnError): the other series still come.
	rec := httptest.NewRecorder()
	x.Handler(4, time.Second).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "sfwatch_build_info") {
		t.Errorf("handler output lacks build_info after a failed read:\n%s", body)
	}
	if strings.Contains(string(body), "sfwatch_sendfile_calls_total{") {
		t.Errorf("handler exported calls despite a failed read")
	}
}

// TestSetSourceWaitsForScrape: SetSource(nil) returns only once a scrape
// in progress has finished reading the old source, so the caller may then
// close the tracer.
func TestSetSourceWaitsForScrape(t *testing.T) {
	x := New("test")
	src := &blockingSource{entered: make(chan struct{}), release: make(chan struct{})}
	x.SetSource(src)
	go x.Registry().Gather()
	<-src.entered
	done := make(chan struct{})
	go func() { x.SetSource(nil); close(done) }()
	select {
	case <-done:
		t.Fatal("SetSource(nil) returned while a scrape was reading the source")
	case <-time.After(50 * time.Millisecond):
	}
	close(src.release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SetSource(nil) did not return after the scrape finished")
	}
}

type blockingSource struct{ entered, release chan struct{} }

func (b *blockingSource) Snapshot() (counters.Snapshot, error) {
	close(b.entered)
	<-b.release
	return snapshot(), nil
}

// TestConcurrentScrapeLimit: more scrapes than the limit get 503 at once.
func TestConcurrentScrapeLimit(t *testing.T) {
	x := New("test")
	src := &blockingSource{entered: make(chan struct{}), release: make(chan struct{})}
	x.SetSource(src)
	h := x.Handler(1, 10*time.Second)
	first := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		first <- rec.Code
	}()
	<-src.entered
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 503 {
		t.Errorf("second concurrent scrape: %d, want 503", rec.Code)
	}
	close(src.release)
	if code := <-first; code != 200 {
		t.Errorf("first scrape: %d, want 200", code)
	}
}

// TestNoUnboundedLabels: every label value comes from a fixed set (errno
// names of 1..4095, rule names, result and kind words).
func TestNoUnboundedLabels(t *testing.T) {
	s := snapshot()
	s.ErrnoCounts = make(map[syscall.Errno]uint64)
	for e := syscall.Errno(1); e < 4096; e++ {
		s.ErrnoCounts[e] = 1
	}
	x := New("test")
	x.SetSource(&fakeSource{snap: s})
	f := gather(t, x)["sfwatch_sendfile_calls_total"]
	if n := len(f.GetMetric()); n != 4+4095 {
		t.Errorf("%d calls series for every possible errno, want %d", n, 4+4095)
	}
	seen := make(map[string]bool)
	for _, m := range f.GetMetric() {
		l := labelsOf(m)
		if seen[l] {
			t.Errorf("duplicate series %s", l)
		}
		seen[l] = true
	}
}
