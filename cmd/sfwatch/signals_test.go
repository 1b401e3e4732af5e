package main

// Calls interrupted by several signals at once: what sfwatch counts must be
// what the program itself saw, whatever the order of handlers, ignored
// signals and stops (testdata/signals.c makes each burst).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// signalKinds are the dispositions signals.c knows: a handler with
// SA_RESTART, a plain handler, ignored, and the default action of SIGSTOP.
const signalKinds = "rpis"

// burstRound turns an order of kinds into signals.c's round argument.
// Within one burst the kernel delivers the lower signal number first, and
// the stop is always SIGSTOP (19), so the other kinds take numbers below
// 19 before it and above 19 after it.
func burstRound(kinds string) string {
	low := []unix.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.SIGALRM}
	high := []unix.Signal{unix.SIGURG, unix.SIGWINCH, unix.SIGIO}
	var parts []string
	stopSeen := false
	for _, k := range kinds {
		var sig unix.Signal
		switch {
		case k == 's':
			sig, stopSeen = unix.SIGSTOP, true
		case stopSeen || !strings.ContainsRune(kinds, 's'):
			sig, high = high[0], high[1:]
		default:
			sig, low = low[0], low[1:]
		}
		parts = append(parts, fmt.Sprintf("%d:%c", sig, k))
	}
	return strings.Join(parts, ",")
}

// signalOrders lists every order of one, two or three kinds, each kind at
// most once, plus two handlers of the same kind.
func signalOrders() []string {
	orders := []string{"rr", "pp"}
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			orders = append(orders, prefix)
		}
		if len(prefix) == 3 {
			return
		}
		for _, k := range signalKinds {
			if !strings.ContainsRune(prefix, k) {
				grow(prefix + string(k))
			}
		}
	}
	grow("")
	return orders
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
