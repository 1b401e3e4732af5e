package main

// Many calls at once: the calls of several threads, each attributed to its
// thread, and a million calls in a tight loop, none lost.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunThreads: four threads, N calls each, all seen and attributed.
func TestRunThreads(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	const threads, n = 4, 2000
	dir := t.TempDir()
	events, report := filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	r := runWorkload(t, []string{"--format", "json", "-o", events, "--report", report}, "threads", strconv.Itoa(threads), strconv.Itoa(n))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if want := accountingLine(threads*n, threads*n, 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	perTid := map[uint32]int{}
	pids := map[uint32]bool{}
	for _, e := range parseJSONEvents(t, string(data)) {
		perTid[e.TID]++
		pids[e.PID] = true
		if e.Offset != nil || e.Ret < 0 || len(e.Violations) != 0 {
			t.Fatalf("unexpected event %+v", e)
		}
	}
	if len(perTid) != threads || len(pids) != 1 {
		t.Errorf("events from %d threads of %d processes, want %d threads of 1: %v", len(perTid), len(pids), threads, perTid)
	}
	for tid, got := range perTid {
		if got != n {
			t.Errorf("thread %d: %d events, want %d", tid, got, n)
		}
	}
	rep := readReport(t, report)
	want := loopTotals(threads, n, false)
	if s := rep.Summary; *s.Calls != want.calls || *s.Bytes != want.bytes || *s.EOF != want.eof || *s.OffsetNull != want.offsetNull || *s.OffsetPtr != 0 || *s.Errors != 0 {
		t.Errorf("report: calls %d bytes %d eof %d offset_null %d offset_ptr %d errors %d, want %+v",
			*s.Calls, *s.Bytes, *s.EOF, *s.OffsetNull, *s.OffsetPtr, *s.Errors, want)
	}
}

// TestRunMillionCalls: a tight loop of a million calls at default settings
// loses nothing; the time against the untraced loop is logged.
func TestRunMillionCalls(t *testing.T) {
	testenv.RequirePrivileged(t)
	if testing.Short() {
		t.Skip("a million calls")
	}
	const n = 1000000
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	untraced := exec.CommandContext(ctx, os.Args[0], "loop", "1", strconv.Itoa(n))
	untraced.Env = append(os.Environ(), workloadEnv()...)
	untraced.WaitDelay = waitDelay
	begin := time.Now()
	if out, err := untraced.CombinedOutput(); err != nil {
		t.Fatalf("untraced loop: %v\n%s", err, out)
	}
	base := time.Since(begin)

	report := filepath.Join(t.TempDir(), "report.json")
	begin = time.Now()
	r := runWorkload(t, []string{"-o", os.DevNull, "--report", report}, "loop", "1", strconv.Itoa(n))
	traced := time.Since(begin)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	// Preemption signals interrupt a few calls, which the kernel restarts:
	// never counted as calls.
	if want := accountingLine(n, n, 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	want := loopTotals(1, n, true)
	if s := readReport(t, report).Summary; *s.Calls != want.calls || *s.Bytes != want.bytes || *s.EOF != want.eof ||
		*s.OffsetNull != want.offsetNull || *s.OffsetPtr != want.offsetPtr || *s.Errors != 0 || *s.Violations != 0 {
		t.Errorf("report: calls %d bytes %d eof %d null %d ptr %d errors %d violations %d; want %+v",
			*s.Calls, *s.Bytes, *s.EOF, *s.OffsetNull, *s.OffsetPtr, *s.Errors, *s.Violations, want)
	}
	t.Logf("1M calls: untraced %v, traced with -o /dev/null %v (%.2fx, sfwatch start-up and exit included)",
		base.Round(time.Millisecond), traced.Round(time.Millisecond), traced.Seconds()/base.Seconds())
}
