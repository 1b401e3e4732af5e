package main

// Calls that signals interrupt: what sfwatch counts must be what the program
// itself saw. One call restarted by the kernel after signals (ERESTARTSYS);
// EINTR under a handler without SA_RESTART (eintr.c); a burst of several
// signals at once in every order of handlers, ignored signals and stops
// (signals.c). The C programs are in internal/testworkload/c.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunRestartedCall: a sendfile interrupted by signals before it moved
// a byte exits with ERESTARTSYS and is restarted by the kernel; the program
// made one call that succeeded, and that is what sfwatch counts, with the
// interruptions reported apart. Asynchronous preemption stays on here.
func TestRunRestartedCall(t *testing.T) {
	testenv.RequirePrivileged(t)
	const signals = 3
	report := filepath.Join(t.TempDir(), "report.json")
	r := sfwatch(t, []string{workloadEnvVar + "=1"}, "run", "--report", report, "-c", "--expect", "errors==0", "--expect", "calls==1",
		"--", os.Args[0], "restart", strconv.Itoa(signals))
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	calls := parseManifest(t, r.stdout)
	if len(calls) != 1 || calls[0].Ret <= 0 {
		t.Fatalf("workload made %+v, want one successful call", calls)
	}
	s := readReport(t, report).Summary
	if *s.Calls != 1 || *s.Errors != 0 || *s.Events != 1 || *s.Bytes != uint64(calls[0].Ret) {
		t.Errorf("report: calls %d errors %d events %d bytes %d; want 1 0 1 %d", *s.Calls, *s.Errors, *s.Events, *s.Bytes, calls[0].Ret)
	}
	// Each signal interrupts the blocked call once; the runtime's own
	// preemption signals may add more.
	if *s.Restarts < signals {
		t.Errorf("report: restarts %d, want at least %d", *s.Restarts, signals)
	}
	if n := tableCounts(r.stderr)["interrupted by a signal, restarted (not counted)"]; n != *s.Restarts {
		t.Errorf("-c table: %d restarted, want %d as in the report:\n%s", n, *s.Restarts, r.stderr)
	}
	want := straceLine(t, calls[0], testComm())
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
}

// TestRunInterruptedCallEINTR: a call a signal interrupts is settled the way
// the kernel settles it. Under a handler without SA_RESTART the program gets
// EINTR: one call, one error. Under SA_RESTART the kernel runs it again: a
// restart, and the call that completes. eintr.c makes both.
func TestRunInterruptedCallEINTR(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := buildTestProgram(t, "eintr")
	t.Parallel()
	report := filepath.Join(t.TempDir(), "report.json")
	r := sfwatch(t, nil, "run", "--report", report, "--", bin)
	if r.code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var outFD, inFD, aRet, aErrno, bRet, bErrno int
	if _, err := fmt.Sscanf(r.stdout, "fds %d %d\nA %d %d\nB %d %d\n", &outFD, &inFD, &aRet, &aErrno, &bRet, &bErrno); err != nil {
		t.Fatalf("program output %q: %v", r.stdout, err)
	}
	if aRet != -1 || aErrno != int(unix.EINTR) || bRet != 4096 {
		t.Fatalf("program saw A = %d (errno %d), B = %d; want -1 EINTR and 4096", aRet, aErrno, bRet)
	}
	got := lines(r.stderr)
	var tid uint32
	if len(got) != 3 {
		t.Fatalf("stderr:\n%s\nwant two calls and the accounting line", r.stderr)
	}
	if _, err := fmt.Sscanf(got[0], "[pid %d<", &tid); err != nil {
		t.Fatalf("line 1 %q: %v", got[0], err)
	}
	call := directCall{Tid: tid, OutFD: int32(outFD), InFD: int32(inFD), Null: true, Count: 4096}
	interrupted, completed := call, call
	interrupted.Ret, completed.Ret = -int64(unix.EINTR), 4096
	want := []string{straceLine(t, interrupted, "eintr"), straceLine(t, completed, "eintr"), accountingLine(2, 2, 0)}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("line %d: %q, want %q", i+1, got[i], w)
		}
	}
	rep := readReport(t, report)
	if s := rep.Summary; *s.Calls != 2 || *s.Errors != 1 || *s.Bytes != 4096 || *s.Restarts != 1 || *s.Violations != 0 {
		t.Errorf("report: calls %d errors %d bytes %d restarts %d violations %d; want 2 1 4096 1 0",
			*s.Calls, *s.Errors, *s.Bytes, *s.Restarts, *s.Violations)
	}
	if rep.ErrorsByErrno["EINTR"] != 1 || len(rep.ErrorsByErrno) != 1 {
		t.Errorf("report: errors by errno %v, want EINTR 1", rep.ErrorsByErrno)
	}
}

// TestRunSignalOrderings: a blocked sendfile takes a burst of signals on
// one return to user space. The first handler decides between restart and
// EINTR; the handlers after it, ignored signals and stops decide nothing.
// Every call, its result, the errors and the restarts must be what the
// program counted.
func TestRunSignalOrderings(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := buildTestProgram(t, "signals")
	var rounds, orders []string
	for _, o := range signalOrders() {
		for range 2 {
			rounds = append(rounds, burstRound(o))
			orders = append(orders, o)
		}
	}
	dir := t.TempDir()
	out, report := filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	args := append([]string{"run", "--format", "json", "-o", out, "--report", report, "--", bin}, rounds...)
	r := sfwatch(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}

	// What the program saw, round by round.
	seen := lines(r.stdout)
	if len(seen) != len(rounds)+1 {
		t.Fatalf("program printed %d lines for %d rounds:\n%s", len(seen), len(rounds), r.stdout)
	}
	var wantErrors, wantBytes, wantRestarts uint64
	rets := make([]int64, len(rounds))
	for i, line := range seen[1:] {
		var round string
		var ret int64
		var errno int
		if _, err := fmt.Sscanf(line, "%s %d %d", &round, &ret, &errno); err != nil || round != rounds[i] {
			t.Fatalf("round %d: line %q: %v", i, line, err)
		}
		if ret < 0 {
			if errno != int(unix.EINTR) {
				t.Fatalf("round %d (%s): errno %d, want EINTR or a transfer", i, orders[i], errno)
			}
			rets[i] = -int64(unix.EINTR)
			wantErrors++
			continue
		}
		rets[i] = ret
		wantBytes += uint64(ret)
		// Interrupted (a handler ran or the thread stopped) and not
		// returned as EINTR: the kernel ran the call again.
		if strings.ContainsAny(orders[i], "rps") {
			wantRestarts++
		}
	}

	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseJSONEvents(t, string(data))
	if len(evs) != len(rounds) {
		t.Errorf("%d events for %d calls", len(evs), len(rounds))
	}
	for i := range min(len(evs), len(rounds)) {
		if evs[i].Ret != rets[i] {
			t.Errorf("round %d (order %q, signals %s): event ret %d, the program got %d", i, orders[i], rounds[i], evs[i].Ret, rets[i])
		}
	}
	s := readReport(t, report).Summary
	if *s.Calls != uint64(len(rounds)) || *s.Errors != wantErrors || *s.Bytes != wantBytes || *s.Restarts != wantRestarts {
		t.Errorf("report: calls %d errors %d bytes %d restarts %d; the program saw %d calls, %d EINTR, %d bytes, so %d restarts",
			*s.Calls, *s.Errors, *s.Bytes, *s.Restarts, len(rounds), wantErrors, wantBytes, wantRestarts)
	}
}
