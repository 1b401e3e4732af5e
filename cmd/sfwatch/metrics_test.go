package main

// Tests of the production side of run and attach: the Prometheus endpoint
// (exact totals while sampling or overflowing, loopback by default, TLS and
// basic auth, clean shutdown), the loss notice, and memory over a long
// stream. The helpers and workloads here are prefixed pm (production
// metrics) so as not to collide with the other test files of the package.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

func init() {
	workloads["pm-calls"] = pmCallsWorkload
}

// pmTotals is what a pm-calls workload counted itself.
type pmTotals struct {
	Calls, Bytes, Null, Pointer uint64
	PID                         int
}

// pmCallsWorkload: THREADS N READY [pin]. THREADS threads make N sendfile
// calls each of 4 KiB to /dev/null, alternating NULL and pointer offsets,
// every one a full transfer (a NULL-offset descriptor is rewound with
// lseek before it reaches the end). The workload counts what the calls
// returned, writes the totals (JSON) to READY, then waits for SIGTERM and
// exits 0: metrics can be scraped while sfwatch still runs. With "pin",
// every thread runs on one CPU, so that --sample's per-CPU cycle is one
// cycle and the number of emitted events is exact.
func pmCallsWorkload(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: pm-calls THREADS N READY [pin]")
	}
	threads, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	ready := args[2]
	pin := len(args) > 3 && args[3] == "pin"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	dir, err := os.MkdirTemp("", "sfwatch-pm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data")
	const size = 64 << 10
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		return err
	}
	var cpu unix.CPUSet
	if pin {
		if err := unix.SchedGetaffinity(0, &cpu); err != nil {
			return err
		}
		first := -1
		for i := 0; i < 1024 && first < 0; i++ {
			if cpu.IsSet(i) {
				first = i
			}
		}
		cpu.Zero()
		cpu.Set(first)
	}
	var (
		mu    sync.Mutex
		total pmTotals
		wg    sync.WaitGroup
		errs  = make(chan error, threads)
	)
	for range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			if pin {
				if err := unix.SchedSetaffinity(0, &cpu); err != nil {
					errs <- err
					return
				}
			}
			in, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(in)
			out, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(out)
			var mine pmTotals
			off := new(int64) // on the heap, which Go never moves
			pos := int64(0)
			for i := range n {
				var offset uintptr
				if i%2 == 1 {
					*off = 0
					offset = uintptr(unsafe.Pointer(off))
					mine.Pointer++
				} else {
					if pos >= size {
						unix.Seek(in, 0, 0)
						pos = 0
					}
					mine.Null++
				}
				r, _, e := unix.Syscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), offset, 4096, 0, 0)
				if e != 0 {
					errs <- fmt.Errorf("sendfile: %w", e)
					return
				}
				if offset == 0 {
					pos += int64(r)
				}
				mine.Calls++
				mine.Bytes += uint64(r)
			}
			runtime.KeepAlive(off)
			mu.Lock()
			total.Calls += mine.Calls
			total.Bytes += mine.Bytes
			total.Null += mine.Null
			total.Pointer += mine.Pointer
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	total.PID = os.Getpid()
	if err := pmWriteFile(ready, total); err != nil {
		return err
	}
	<-term
	return nil
}

// pmWriteFile writes v as JSON to path atomically (tmp, then rename).
func pmWriteFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// pmEnv is the environment a workload needs besides ours.
var pmEnv = workloadEnv()

// pmProc is an sfwatch process running in the background.
type pmProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
}

// pmStart starts sfwatch with args, with the workload environment.
func pmStart(t *testing.T, args ...string) *pmProc {
	t.Helper()
	p := &pmProc{cmd: exec.Command(sfwatchBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), pmEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = waitDelay
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pmProc) pid() int { return p.cmd.Process.Pid }

func (p *pmProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits (at most a minute) for sfwatch to exit; it
// checks that nothing was left behind.
func (p *pmProc) stop(t *testing.T, sig os.Signal) result {
	t.Helper()
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("sfwatch did not exit within a minute of %v; stderr:\n%s", sig, p.stderr.String())
	}
	r := result{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.cmd.ProcessState.ExitCode(), pid: p.pid()}
	assertNothingLeft(t, r.pid)
	return r
}

// waitFor polls cond every 20 ms until it holds or timeout passes; it
// fails the test if sfwatch exits or time runs out.
func (p *pmProc) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		if p.exited() {
			t.Fatalf("waiting for %s: sfwatch exited (%v); stderr:\n%s", what, p.cmd.ProcessState, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v; sfwatch stderr:\n%s", what, timeout, p.stderr.String())
		}
	}
}

// pmReady waits for a pm-calls workload's READY file.
func pmReady(t *testing.T, p *pmProc, path string) pmTotals {
	t.Helper()
	var tot pmTotals
	p.waitFor(t, "the workload's "+filepath.Base(path)+" file", slow(time.Minute), func() bool {
		data, err := os.ReadFile(path)
		return err == nil && json.Unmarshal(data, &tot) == nil
	})
	return tot
}

// pmAddr returns a loopback address whose port was free a moment ago.
func pmAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pmAssertPortFree checks that addr can be bound again: sfwatch's metrics
// server is gone.
func pmAssertPortFree(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("metrics port %s still in use after sfwatch exited: %v", addr, err)
		return
	}
	ln.Close()
}

// pmMetrics is one scrape, by family name.
type pmMetrics map[string]*dto.MetricFamily

// pmScrape GETs url and parses the text format.
func pmScrape(t *testing.T, client *http.Client, url string) pmMetrics {
	t.Helper()
	fams, err := pmTryScrape(client, url)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func pmTryScrape(client *http.Client, url string) (pmMetrics, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s: %s", url, resp.Status, body)
	}
	fams, err := pmParse(body)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape of %s: %w\n%s", url, err, body)
	}
	return fams, nil
}

// pmParse parses a scrape in the text format.
func pmParse(body []byte) (pmMetrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(body))
}

// get returns the value of the series of family name whose labels include
// the given name=value pairs, summed; ok is false when there is none.
func (m pmMetrics) get(name string, labels ...string) (v float64, ok bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.GetMetric() {
		have := make(map[string]string)
		for _, l := range s.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case s.Counter != nil:
			v += s.GetCounter().GetValue()
		case s.Gauge != nil:
			v += s.GetGauge().GetValue()
		case s.Untyped != nil:
			v += s.GetUntyped().GetValue()
		case s.Histogram != nil:
			v += float64(s.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

// value is get for a series that must exist.
func (m pmMetrics) value(t *testing.T, name string, labels ...string) uint64 {
	t.Helper()
	v, ok := m.get(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	if v != math.Trunc(v) || v < 0 {
		t.Fatalf("%s%v = %v, not a count", name, labels, v)
	}
	return uint64(v)
}

// calls is sfwatch_sendfile_calls_total over every result and errno.
func (m pmMetrics) calls(t *testing.T) uint64 {
	return m.value(t, "sfwatch_sendfile_calls_total")
}

// drained is true once every call the kernel counted has been delivered,
// lost or sampled out: the consumer has caught up.
func (m pmMetrics) drained(t *testing.T) bool {
	return m.value(t, "sfwatch_events_delivered_total")+m.value(t, "sfwatch_events_lost_total")+
		m.value(t, "sfwatch_events_sampled_out_total") == m.calls(t)
}

// pmScrapeDrained scrapes until the consumer has caught up.
func pmScrapeDrained(t *testing.T, p *pmProc, client *http.Client, url string) pmMetrics {
	t.Helper()
	var m pmMetrics
	p.waitFor(t, "the consumer to catch up", 30*time.Second, func() bool {
		var err error
		m, err = pmTryScrape(client, url)
		return err == nil && m["sfwatch_sendfile_calls_total"] != nil && m.drained(t)
	})
	return m
}

// checkHistogram: the duration histogram counts every call, its buckets
// are cumulative, and +Inf equals the count.
func checkHistogram(t *testing.T, m pmMetrics, calls uint64) {
	t.Helper()
	f := m["sfwatch_sendfile_duration_seconds"]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
		t.Fatalf("sfwatch_sendfile_duration_seconds: missing or not one histogram: %v", f)
	}
	h := f.GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != calls {
		t.Errorf("histogram _count = %d, want %d (every call)", h.GetSampleCount(), calls)
	}
	if h.GetSampleSum() <= 0 {
		t.Errorf("histogram _sum = %v, want > 0", h.GetSampleSum())
	}
	prev := uint64(0)
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Errorf("bucket le=%g: %d < previous %d: not cumulative", b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
		if le := b.GetUpperBound(); !math.IsInf(le, 1) {
			if exp := math.Log2(le * 1e9); math.Abs(exp-math.Round(exp)) > 1e-9 {
				t.Errorf("bucket le=%g s is not a power of two of nanoseconds", le)
			}
		}
	}
	if prev > calls {
		t.Errorf("largest finite bucket %d > count %d", prev, calls)
	}
}

// checkWorkloadTotals: the kernel's calls, results, bytes and offsets are
// exactly what the workload made and counted itself.
func checkWorkloadTotals(t *testing.T, m pmMetrics, w pmTotals) {
	t.Helper()
	for _, c := range []struct {
		name   string
		labels []string
		want   uint64
	}{
		{"sfwatch_sendfile_calls_total", nil, w.Calls},
		{"sfwatch_sendfile_calls_total", []string{"result", "ok"}, w.Calls},
		{"sfwatch_sendfile_calls_total", []string{"result", "short"}, 0},
		{"sfwatch_sendfile_calls_total", []string{"result", "eof"}, 0},
		{"sfwatch_sendfile_bytes_total", nil, w.Bytes},
		{"sfwatch_sendfile_offset_total", []string{"kind", "null"}, w.Null},
		{"sfwatch_sendfile_offset_total", []string{"kind", "pointer"}, w.Pointer},
	} {
		if got := m.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.labels, got, c.want)
		}
	}
	if v, ok := m.get("sfwatch_sendfile_calls_total", "result", "error"); ok {
		t.Errorf("calls with result=error: %v, want none (asynchronous preemption is off: no ERESTARTSYS)", v)
	}
	checkHistogram(t, m, w.Calls)
	if v, _ := m.get("sfwatch_sendfile_violations_total"); v != 0 {
		t.Errorf("violations = %v, want 0", v)
	}
}

// checkSelfMetrics: build info, child_up and the Go and process
// collectors (what the soak script reads) are there.
func checkSelfMetrics(t *testing.T, m pmMetrics) {
	t.Helper()
	if v := m.value(t, "sfwatch_child_up"); v != 1 {
		t.Errorf("sfwatch_child_up = %d while watching, want 1", v)
	}
	if v := m.value(t, "sfwatch_build_info"); v != 1 {
		t.Errorf("sfwatch_build_info = %d, want 1", v)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := m.get(name); !ok {
			t.Errorf("%s missing", name)
		}
	}
	// Every program's skips are exported, whatever their count.
	for _, prog := range loader.Programs() {
		if _, ok := m.get("sfwatch_programs_skipped_total", "program", prog); !ok {
			t.Errorf("sfwatch_programs_skipped_total{program=%q} missing", prog)
		}
	}
	// No family is registered twice or outside the two namespaces.
	for name := range m {
		if !strings.HasPrefix(name, "sfwatch_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("unexpected family %s", name)
		}
	}
}

// TestMetricsExactTotals: with every event, and with --sample 10, the
// metrics are exactly the calls and bytes the workload made, scraped while
// sfwatch still runs; the sampled-out and delivered counts are exact.
func TestMetricsExactTotals(t *testing.T) {
	testenv.RequirePrivileged(t)
	const n = 100000
	for _, tc := range []struct {
		name   string
		sample uint64
	}{
		{"every-event", 1},
		{"sample-10", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := pmAddr(t)
			ready := filepath.Join(t.TempDir(), "ready")
			p := pmStart(t, "run", "--metrics-addr", addr, "--sample", strconv.FormatUint(tc.sample, 10), "--quiet",
				"--", os.Args[0], "pm-calls", "1", strconv.Itoa(n), ready, "pin")
			w := pmReady(t, p, ready)
			if w.Calls != n || w.Bytes != n*4096 {
				t.Fatalf("workload made %d calls, %d bytes; want %d, %d", w.Calls, w.Bytes, n, n*4096)
			}
			m := pmScrapeDrained(t, p, nil, "http://"+addr+"/metrics")
			checkWorkloadTotals(t, m, w)
			checkSelfMetrics(t, m)
			lost := m.value(t, "sfwatch_events_lost_total")
			delivered := m.value(t, "sfwatch_events_delivered_total")
			sampled := m.value(t, "sfwatch_events_sampled_out_total")
			// One thread on one CPU: the kernel emits calls 0, N, 2N, ...
			emitted := (w.Calls + tc.sample - 1) / tc.sample
			if sampled != w.Calls-emitted {
				t.Errorf("sampled out %d, want %d", sampled, w.Calls-emitted)
			}
			if delivered+lost != emitted {
				t.Errorf("delivered %d + lost %d = %d, want %d emitted", delivered, lost, delivered+lost, emitted)
			}
			if tc.sample == 10 && (sampled != 90000 || delivered+lost != 10000) {
				t.Errorf("--sample 10 of 100000 calls: sampled out %d, delivered+lost %d; want 90000, 10000", sampled, delivered+lost)
			}
			t.Logf("calls %d, delivered %d, lost %d, sampled out %d", w.Calls, delivered, lost, sampled)

			r := p.stop(t, syscall.SIGTERM)
			if r.code != 0 {
				t.Errorf("exit %d, want 0 (the workload exits 0 on SIGTERM); stderr:\n%s", r.code, r.stderr)
			}
			want := fmt.Sprintf("sfwatch: %d calls counted in the kernel, %d events delivered, %d lost", w.Calls, delivered, lost)
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
			pmAssertPortFree(t, addr)
		})
	}
}

// lossNoticeRE matches the loss notice.
var lossNoticeRE = regexp.MustCompile(`(?m)^sfwatch: (\d+) events lost in the last 10s \(ring buffer full; totals stay exact\)$`)

// noticedLosses sums the losses the notices reported so far.
func noticedLosses(stderr string) (sum uint64, notices int) {
	for _, m := range lossNoticeRE.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		sum += n
		notices++
	}
	return sum, notices
}

// TestMetricsRingBufferOverflow: a ring buffer of one page and two threads
// in a tight loop lose events; the totals stay exact, every call is
// either delivered or lost, the losses are exported, and a notice on
// stderr (at most once per 10 s) reports them.
func TestMetricsRingBufferOverflow(t *testing.T) {
	testenv.RequirePrivileged(t)
	addr := pmAddr(t)
	ready := filepath.Join(t.TempDir(), "ready")
	start := time.Now()
	p := pmStart(t, "run", "--metrics-addr", addr, "--ringbuf-size", "4096", "-o", os.DevNull,
		"--", os.Args[0], "pm-calls", "2", "200000", ready)
	w := pmReady(t, p, ready)
	m := pmScrapeDrained(t, p, nil, "http://"+addr+"/metrics")
	checkWorkloadTotals(t, m, w)
	lost := m.value(t, "sfwatch_events_lost_total")
	delivered := m.value(t, "sfwatch_events_delivered_total")
	if lost == 0 {
		t.Errorf("no event lost with a 4 KiB ring buffer and %d calls: the test proves nothing", w.Calls)
	}
	if lost+delivered != w.Calls {
		t.Errorf("lost %d + delivered %d = %d, want %d calls", lost, delivered, lost+delivered, w.Calls)
	}
	if s := m.value(t, "sfwatch_events_sampled_out_total"); s != 0 {
		t.Errorf("sampled out %d without --sample", s)
	}

	// The notice: the losses all happened in the first interval, so the
	// first tick (10 s after the start) reports them all.
	p.waitFor(t, "the loss notice", 30*time.Second, func() bool {
		sum, _ := noticedLosses(p.stderr.String())
		return sum == lost
	})
	t.Logf("%d calls, %d delivered, %d lost; notice after %v", w.Calls, delivered, lost, time.Since(start).Round(time.Second))
	r := p.stop(t, syscall.SIGTERM)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	sum, notices := noticedLosses(r.stderr)
	if sum != lost {
		t.Errorf("notices report %d lost, the metric %d", sum, lost)
	}
	if limit := int(time.Since(start)/lossNoticeInterval) + 1; notices > limit {
		t.Errorf("%d loss notices in %v: more than one per %v", notices, time.Since(start), lossNoticeInterval)
	}
	want := fmt.Sprintf("sfwatch: %d calls counted in the kernel, %d events delivered, %d lost", w.Calls, delivered, lost)
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	pmAssertPortFree(t, addr)
}

// TestMetricsLossNotice checks the notice's wording and rate without a
// kernel: one line per interval in which the total grew, none otherwise.
func TestMetricsLossNotice(t *testing.T) {
	var out bytes.Buffer
	n := &lossNotice{w: &out, interval: 10 * time.Second}
	for _, lost := range []uint64{0, 0, 5, 5, 12, 12, 12, 1000012} {
		n.observe(lost)
	}
	want := "sfwatch: 5 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 7 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 1000000 events lost in the last 10s (ring buffer full; totals stay exact)\n"
	if out.String() != want {
		t.Errorf("notices:\n%s\nwant:\n%s", out.String(), want)
	}

	// run: one read per tick, nothing between ticks, a failed read skipped
	// (its losses are reported at the next tick), returns on stop.
	out.Reset()
	n = &lossNotice{w: &out, interval: 10 * time.Second}
	tick := make(chan time.Time)
	stop := make(chan struct{})
	reads := []struct {
		lost uint64
		err  error
	}{{3, nil}, {9, errors.New("busy")}, {9, nil}, {9, nil}}
	i := 0
	done := make(chan struct{})
	go func() {
		n.run(func() (uint64, error) { r := reads[i]; i++; return r.lost, r.err }, tick, stop)
		close(done)
	}()
	for range reads {
		tick <- time.Now()
	}
	close(stop)
	<-done
	if i != len(reads) {
		t.Errorf("%d reads for %d ticks", i, len(reads))
	}
	want = "sfwatch: 3 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 6 events lost in the last 10s (ring buffer full; totals stay exact)\n"
	if out.String() != want {
		t.Errorf("notices:\n%s\nwant:\n%s", out.String(), want)
	}
}

// pmListeners returns the local addresses ("0100007F:24F8" style, as in
// /proc/net/tcp{,6}) of the TCP sockets that process pid listens on.
func pmListeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := make(map[string]bool)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var addrs []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) >= 10 && f[3] == "0A" && inodes[f[9]] {
				addrs = append(addrs, f[1])
			}
		}
	}
	return addrs
}

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

// pmCert writes a self-signed certificate for 127.0.0.1 and its key into
// dir and returns the paths and a pool that trusts it.
func pmCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sfwatch test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
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

// fifo makes a named pipe at path.
func fifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
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

// pmStatus reads a kB field of /proc/PID/status, in bytes.
func pmStatus(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestMetricsMemoryBounded: 4 million events through the text renderer to
// /dev/null leave sfwatch's peak RSS under 40 MiB (8 MiB of it is the ring
// buffer), with a handful of descriptors and goroutines.
func TestMetricsMemoryBounded(t *testing.T) {
	testenv.RequirePrivileged(t)
	if testing.Short() {
		t.Skip("streams 4 million events; -short")
	}
	const maxHWM = 40 << 20
	addr := pmAddr(t)
	ready := filepath.Join(t.TempDir(), "ready")
	p := pmStart(t, "run", "--metrics-addr", addr, "-o", os.DevNull, "--", os.Args[0], "pm-calls", "2", "2000000", ready)
	w := pmReady(t, p, ready)
	m := pmScrapeDrained(t, p, nil, "http://"+addr+"/metrics")
	hwm := pmStatus(t, p.pid(), "VmHWM")
	rss := pmStatus(t, p.pid(), "VmRSS")
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid()))
	if err != nil {
		t.Fatal(err)
	}
	delivered, lost := m.value(t, "sfwatch_events_delivered_total"), m.value(t, "sfwatch_events_lost_total")
	goroutines := m.value(t, "go_goroutines")
	t.Logf("%d calls: %d delivered, %d lost; sfwatch VmHWM %.1f MiB, VmRSS %.1f MiB, %d fds, %d goroutines",
		w.Calls, delivered, lost, float64(hwm)/(1<<20), float64(rss)/(1<<20), len(fds), goroutines)
	if w.Calls != 4000000 || m.calls(t) != w.Calls {
		t.Errorf("calls: workload %d, kernel %d, want 4000000", w.Calls, m.calls(t))
	}
	if hwm >= maxHWM {
		t.Errorf("sfwatch VmHWM %d bytes (%.1f MiB) after %d events, want < 40 MiB", hwm, float64(hwm)/(1<<20), delivered)
	}
	// About 50 at start: seven programs and their links, the maps, the
	// ring buffer's epoll and eventfd, the group, the listener, the
	// runtime's own. What must not happen is growth with events.
	const maxFDs = 64
	if len(fds) > maxFDs {
		t.Errorf("sfwatch holds %d descriptors", len(fds))
	}
	if goroutines > 40 {
		t.Errorf("sfwatch runs %d goroutines", goroutines)
	}
	if v := m.value(t, "process_open_fds"); v > maxFDs {
		t.Errorf("process_open_fds = %d", v)
	}
	r := p.stop(t, syscall.SIGTERM)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
}
