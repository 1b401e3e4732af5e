package main

// The totals sfwatch exports are exact: with every event and with --sample,
// with a ring buffer that overflows (and the loss notice on stderr that says
// so), and with sfwatch's memory bounded over a stream of millions of events.
// The helpers are in helpers_metrics_test.go.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/session"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

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
	if limit := int(time.Since(start)/session.LossNoticeInterval) + 1; notices > limit {
		t.Errorf("%d loss notices in %v: more than one per %v", notices, time.Since(start), session.LossNoticeInterval)
	}
	want := fmt.Sprintf("sfwatch: %d calls counted in the kernel, %d events delivered, %d lost", w.Calls, delivered, lost)
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	pmAssertPortFree(t, addr)
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
