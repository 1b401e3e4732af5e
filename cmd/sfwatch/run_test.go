package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// The seed's test matched this against `strace -f` output.
var seedRegexp = regexp.MustCompile(`sendfile(64)?\(\d+,\s*\d+,\s*NULL,\s*\d+\)\s*=\s*\d+\s*\n`)

// offsetsManifest checks the offsets workload's own account of its calls:
// the kinds the tests below rely on, in order.
func offsetsManifest(t *testing.T, stdout string) []directCall {
	t.Helper()
	calls := parseManifest(t, stdout)
	if len(calls) != 9 {
		t.Fatalf("offsets workload reported %d calls, want 9:\n%s", len(calls), stdout)
	}
	want := []struct {
		null bool
		ret  int64
	}{{true, 4096}, {false, 4096}, {false, 100}, {false, 0}, {true, -9}, {false, -29}, {true, -22}, {false, 0}, {true, 0}}
	for i, w := range want {
		if c := calls[i]; c.Null != w.null || c.Ret != w.ret {
			t.Fatalf("offsets workload call %d: %+v, want null=%v ret=%d", i, c, w.null, w.ret)
		}
	}
	if c := calls[1]; c.OffsetBefore != 0 || c.OffsetAfter != 4096 {
		t.Fatalf("offsets workload call 1: %+v, want [0] => [4096]", c)
	}
	return calls
}

// TestRunOffsetsText: each of the workload's calls appears as exactly the
// strace line for it, with the right thread, and nothing else does.
func TestRunOffsetsText(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := runWorkload(t, nil, "offsets")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	calls := offsetsManifest(t, r.stdout)
	want := make([]string, 0, len(calls)+1)
	for _, c := range calls {
		want = append(want, straceLine(t, c, testComm()))
	}
	want = append(want, accountingLine(9, 9, 0))
	if got := lines(r.stderr); !slices.Equal(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Spot checks written out in full, independent of straceLine.
	comm := testComm()
	tid := calls[1].Tid
	for _, s := range []string{
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, [0] => [4096], 4096) = 4096\n", tid, comm, calls[1].OutFD, calls[1].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, [16284] => [16384], 4096) = 100\n", tid, comm, calls[2].OutFD, calls[2].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, [16384], 4096) = 0\n", tid, comm, calls[3].OutFD, calls[3].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(999, %d, NULL, 4096) = -1 EBADF (Bad file descriptor)\n", tid, comm, calls[4].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, [0], 4096) = -1 ESPIPE (Illegal seek)\n", tid, comm, calls[5].OutFD, calls[5].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, NULL, 4096) = -1 EINVAL (Invalid argument)\n", tid, comm, calls[6].OutFD, calls[6].InFD),
		fmt.Sprintf("[pid %5d<%s>] sendfile(%d, %d, [0], 0) = 0\n", tid, comm, calls[7].OutFD, calls[7].InFD),
	} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	if m := seedRegexp.FindAllString(r.stderr, -1); len(m) != 2 { // NULL 4096 and NULL EOF
		t.Errorf("the seed's regexp matched %d lines (%q), want the 2 successful NULL-offset calls", len(m), m)
	}
}

// TestRunOffsetsJSON: the same calls as JSON Lines, every field exact, with
// -ttt's wall-clock time.
func TestRunOffsetsJSON(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	begin := time.Now()
	r := runWorkload(t, []string{"--format", "json", "-ttt"}, "offsets")
	end := time.Now()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	calls := offsetsManifest(t, r.stdout)
	pid := workloadPID(t, r.stdout)
	out := lines(r.stderr)
	if len(out) != len(calls)+1 || out[len(out)-1] != accountingLine(9, 9, 0) {
		t.Fatalf("stderr: want %d JSON lines and the accounting line, got:\n%s", len(calls), r.stderr)
	}
	evs := parseJSONEvents(t, strings.Join(out[:len(calls)], "\n"))
	for i, c := range calls {
		e := evs[i]
		where := fmt.Sprintf("event %d (%+v)", i, c)
		if e.PID != uint32(pid) || e.TID != c.Tid || e.Comm != testComm() {
			t.Errorf("%s: pid %d tid %d comm %q, want %d %d %q", where, e.PID, e.TID, e.Comm, pid, c.Tid, testComm())
		}
		if e.OutFD != c.OutFD || e.InFD != c.InFD || e.Count != c.Count || e.Ret != c.Ret {
			t.Errorf("%s: out_fd %d in_fd %d count %d ret %d", where, e.OutFD, e.InFD, e.Count, e.Ret)
		}
		switch {
		case c.Null && e.Offset != nil:
			t.Errorf("%s: offset %+v, want null", where, *e.Offset)
		case !c.Null && (e.Offset == nil || e.Offset.Before == nil || e.Offset.After == nil):
			t.Errorf("%s: offset %+v, want before and after", where, e.Offset)
		case !c.Null && (*e.Offset.Before != c.OffsetBefore || *e.Offset.After != c.OffsetAfter):
			t.Errorf("%s: offset %d => %d, want %d => %d", where, *e.Offset.Before, *e.Offset.After, c.OffsetBefore, c.OffsetAfter)
		}
		wantClass := "ok"
		switch {
		case c.Ret < 0:
			wantClass = "error"
			if e.Errno == nil || *e.Errno != errnoNames[c.Ret] {
				t.Errorf("%s: errno %v, want %s", where, e.Errno, errnoNames[c.Ret])
			}
		case c.Ret == 0:
			wantClass = "eof"
		case uint64(c.Ret) < c.Count:
			wantClass = "short"
		}
		if c.Ret >= 0 && e.Errno != nil {
			t.Errorf("%s: errno %q, want null", where, *e.Errno)
		}
		if e.Class != wantClass {
			t.Errorf("%s: class %q, want %q", where, e.Class, wantClass)
		}
		if e.DurationNs == nil || *e.DurationNs == 0 || *e.DurationNs > uint64(10*time.Second) {
			t.Errorf("%s: duration_ns %v, want a positive number below 10 s", where, e.DurationNs)
		}
		if e.Violations == nil || len(e.Violations) != 0 {
			t.Errorf("%s: violations %v, want []", where, e.Violations)
		}
	}
	for i := 1; i < len(evs); i++ {
		if *evs[i].StartNs < *evs[i-1].StartNs {
			t.Errorf("event %d starts at %d, before event %d at %d", i, *evs[i].StartNs, i-1, *evs[i-1].StartNs)
		}
	}
	// -ttt gives time_unix_ns, start_ns on the wall clock: inside the run,
	// and as far from the first event as start_ns is (one offset for all).
	for i, e := range evs {
		if e.TimeUnixNs == nil {
			t.Fatalf("event %d has no time_unix_ns", i)
		}
		at := time.Unix(0, *e.TimeUnixNs)
		if at.Before(begin.Add(-time.Millisecond)) || at.After(end) {
			t.Errorf("event %d: time_unix_ns %v outside the run [%v, %v]", i, at, begin, end)
		}
		if got, want := *e.TimeUnixNs-*evs[0].TimeUnixNs, int64(*e.StartNs-*evs[0].StartNs); got != want {
			t.Errorf("event %d: %d ns after the first by time_unix_ns, %d by start_ns", i, got, want)
		}
	}
}

// TestRunDurations: -T appends strace's " <S.UUUUUU>" to every line.
func TestRunDurations(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := runWorkload(t, []string{"-T"}, "offsets")
	calls := offsetsManifest(t, r.stdout)
	out := lines(r.stderr)
	if r.code != 0 || len(out) != len(calls)+1 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	dur := regexp.MustCompile(` <(\d+)\.(\d{6})>$`)
	for i, c := range calls {
		m := dur.FindStringSubmatchIndex(out[i])
		if m == nil {
			t.Errorf("line %q has no duration", out[i])
			continue
		}
		if want := straceLine(t, c, testComm()); out[i][:m[0]] != want {
			t.Errorf("line %q, want %q followed by the duration", out[i], want)
		}
		if s := out[i][m[2]:m[3]]; s != "0" {
			t.Errorf("line %q: a call of the offsets workload took %s s", out[i], s)
		}
	}
	if out[len(calls)] != accountingLine(9, 9, 0) {
		t.Errorf("last line %q", out[len(calls)])
	}
}

// TestRunOutputFile: -o FILE takes the events and the -c table; stderr
// keeps only the accounting line.
func TestRunOutputFile(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	file := filepath.Join(t.TempDir(), "events.txt")
	r := runWorkload(t, []string{"-o", file, "-c"}, "offsets")
	calls := offsetsManifest(t, r.stdout)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if want := accountingLine(9, 9, 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want only %q", r.stderr, want)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got := lines(string(data))
	if len(got) < len(calls) {
		t.Fatalf("%s:\n%s", file, data)
	}
	for i, c := range calls {
		if want := straceLine(t, c, testComm()); got[i] != want {
			t.Errorf("%s line %d: %q, want %q", file, i+1, got[i], want)
		}
	}
	if got[len(calls)] != "sendfile calls (exact, counted in the kernel):" {
		t.Errorf("%s: the table does not follow the events: %q", file, got[len(calls)])
	}
	checkTable(t, string(data), countManifest(t, calls), 9)
}

// TestRunJSONOutputFileWithTable: with --format json the -o file stays
// JSON Lines, and the -c table goes to stderr.
func TestRunJSONOutputFileWithTable(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	file := filepath.Join(t.TempDir(), "events.jsonl")
	r := runWorkload(t, []string{"--format", "json", "-o", file, "-c"}, "offsets")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseJSONEvents(t, string(data))
	if len(evs) != 9 {
		t.Errorf("%s: %d events, want 9", file, len(evs))
	}
	for i, e := range evs {
		if e.TimeUnixNs != nil {
			t.Errorf("event %d has time_unix_ns without -t, -tt or -ttt", i)
		}
	}
	checkTable(t, r.stderr, countManifest(t, offsetsManifest(t, r.stdout)), 9)
}

// TestRunSummaryTable: -c prints the strace -c style table, exact counts.
func TestRunSummaryTable(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := runWorkload(t, []string{"-c"}, "offsets")
	calls := offsetsManifest(t, r.stdout)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	checkTable(t, r.stderr, countManifest(t, calls), 9)
	if !strings.HasSuffix(r.stderr, "\n"+accountingLine(9, 9, 0)+"\n") {
		t.Errorf("stderr does not end with the accounting line:\n%s", r.stderr)
	}
}

// tableCounts reads the "  N  label" rows of a -c table.
func tableCounts(text string) map[string]uint64 {
	rows := map[string]uint64{}
	re := regexp.MustCompile(`(?m)^ +(\d+)  (\S.*)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		rows[m[2]] = n
	}
	return rows
}

func checkTable(t *testing.T, text string, m manifestCounts, events uint64) {
	t.Helper()
	rows := tableCounts(text)
	want := map[string]uint64{
		"calls": m.calls, "bytes": m.bytes, "errors": m.errors, "short": m.short, "eof": m.eof,
		"offset NULL": m.offsetNull, "offset pointer": m.offsetPtr,
		"delivered": events, "lost (ring buffer full)": 0, "violations": 0,
	}
	for name, text := range map[string]string{"EBADF": "Bad file descriptor", "ESPIPE": "Illegal seek", "EINVAL": "Invalid argument"} {
		want[name+" ("+text+")"] = m.byErrno[name]
	}
	for label, n := range want {
		if got, ok := rows[label]; !ok || got != n {
			t.Errorf("table row %q: %d (present %v), want %d; table:\n%s", label, got, ok, n, text)
		}
	}
	for _, title := range []string{"sendfile calls (exact, counted in the kernel):\n", "events (one per call, checked against the contract):\n", "errors by errno:\n"} {
		if !strings.Contains(text, title) {
			t.Errorf("table lacks %q", title)
		}
	}
}

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

// TestRunGrandchild: a double-forked setsid grandchild is traced, and is
// gone once sfwatch has exited.
func TestRunGrandchild(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	ready := filepath.Join(t.TempDir(), "ready")
	r := runWorkload(t, []string{"--format", "json"}, "grandchild", ready)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	childPID := workloadPID(t, r.stdout)
	data, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	gpid, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatalf("ready file %q", data)
	}
	if gpid == childPID {
		t.Fatalf("grandchild pid %d is the child's", gpid)
	}
	out := lines(r.stderr)
	if len(out) != 4 || out[3] != accountingLine(3, 3, 0) {
		t.Fatalf("stderr: want 3 events and the accounting line:\n%s", r.stderr)
	}
	for _, e := range parseJSONEvents(t, strings.Join(out[:3], "\n")) {
		if e.PID != uint32(gpid) || e.TID != uint32(gpid) || e.Comm != testComm() {
			t.Errorf("event from pid %d tid %d (%s), want the grandchild %d", e.PID, e.TID, e.Comm, gpid)
		}
		if e.Offset == nil || *e.Offset.Before != 0 || *e.Offset.After != 4096 || e.Ret != 4096 || e.Count != 4096 {
			t.Errorf("event %+v, want [0] => [4096] = 4096", e)
		}
	}
	// Killed with the group before sfwatch exited; whoever inherited it
	// may take a moment to reap it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		state := procState(gpid)
		if state == "" || state == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after sfwatch exited (state %s)", gpid, state)
		}
	}
}

// procState is the state letter of pid from /proc/PID/stat, "" if gone.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "?"
	}
	return s[i+2 : i+3]
}

// testPrograms are the C programs in testdata and their gcc flags. They are
// static so that a copy built here runs on a machine without gcc or libc.
var testPrograms = map[string][]string{
	"first":   {"-nostdlib", "-static"},
	"eintr":   {"-static"},
	"signals": {"-static"},
}

// prebuildEnvVar names a directory: TestMain builds the testPrograms into
// it and exits (scripts/kernels, for guests without gcc). prebuiltEnvVar
// names a directory that holds them and sfwatch, used instead of building.
const (
	prebuildEnvVar = "SFWATCH_TEST_PREBUILD"
	prebuiltEnvVar = "SFWATCH_TEST_PREBUILT"
)

// buildTestProgram returns testdata/NAME.c, an x86-64 program, built with
// gcc into a temporary directory, or taken from $SFWATCH_TEST_PREBUILT.
func buildTestProgram(t *testing.T, name string) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("testdata/%s.c is x86-64 only", name)
	}
	if _, ok := testPrograms[name]; !ok {
		t.Fatalf("testdata/%s.c is not in testPrograms: a prebuilt set would lack it", name)
	}
	if dir := os.Getenv(prebuiltEnvVar); dir != "" {
		return filepath.Join(dir, name)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := compileTestProgram(testenv.NeedTool(t, "gcc"), name, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func compileTestProgram(gcc, name, bin string) error {
	args := append(append([]string{"-O2", "-Wall"}, testPrograms[name]...), "-o", bin, "testdata/"+name+".c")
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// prebuildTestPrograms builds every testPrograms entry into dir; it returns
// an exit code.
func prebuildTestPrograms(dir string) int {
	for name := range testPrograms {
		if err := compileTestProgram("gcc", name, filepath.Join(dir, name)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// TestRunFirstSyscall: the child is traced from its first instruction, so
// a sendfile that is its very first system call is always seen.
func TestRunFirstSyscall(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := buildTestProgram(t, "first")
	t.Parallel()
	for i := range 30 {
		r := sfwatch(t, nil, "run", "--format", "json", "--", bin)
		out := lines(r.stderr)
		if r.code != 0 || len(out) != 2 || out[1] != accountingLine(1, 1, 0) {
			t.Fatalf("run %d: exit %d, stderr:\n%s", i, r.code, r.stderr)
		}
		e := parseJSONEvents(t, out[0])[0]
		if e.Comm != "first" || e.OutFD != 999 || e.InFD != 0 || e.Offset != nil || e.Count != 0 || e.Ret != -9 || e.Errno == nil || *e.Errno != "EBADF" {
			t.Fatalf("run %d: event %s, want first's sendfile(999, 0, NULL, 0) = EBADF", i, out[0])
		}
	}
}

// TestRunExitCodes: sfwatch exits with the child's status, or 126/127
// with one line naming a command that cannot run.
func TestRunExitCodes(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		argv []string
		code int
		line string // the one stderr line, or "" for the accounting line
	}{
		{"zero", []string{os.Args[0], "exit", "0"}, 0, ""},
		{"seven", []string{os.Args[0], "exit", "7"}, 7, ""},
		{"not executable", []string{notExec}, 126, "sfwatch: " + notExec + ": permission denied (not executable)"},
		{"directory", []string{dir}, 126, "sfwatch: " + dir + ": is a directory (not executable)"},
		{"missing path", []string{missing, "arg"}, 127, "sfwatch: " + missing + ": command not found"},
		{"missing in PATH", []string{"sfwatch-no-such-command"}, 127, "sfwatch: sfwatch-no-such-command: command not found"},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sfwatch(t, workloadEnv(), append([]string{"run", "--"}, tc.argv...)...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			want := tc.line
			if want == "" {
				want = accountingLine(0, 0, 0)
			}
			if r.stderr != want+"\n" || r.stdout != "" {
				t.Errorf("stderr %q stdout %q, want stderr %q", r.stderr, r.stdout, want+"\n")
			}
		})
	}
}

// TestRunSignalsForwardedOnce: each signal sfwatch forwards, sent to the
// sfwatch process, reaches the child exactly once; the workload exits with
// the number it got.
func TestRunSignalsForwardedOnce(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			t.Parallel() // with each other only: the top-level test is not
			ready := filepath.Join(t.TempDir(), "ready")
			s := startSfwatch(t, "run", "--", os.Args[0], "count-sigterm", ready, strconv.Itoa(int(sig)))
			waitForFile(t, ready, s)
			if err := s.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r := s.wait(t)
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (one %v); stderr:\n%s", r.code, sig, r.stderr)
			}
			if want := accountingLine(0, 0, 0) + "\n"; r.stderr != want {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
		})
	}
}

// TestRunForkServer: three forked net/http servers, one fetch each: three
// processes send the page with NULL-offset sendfile, all bytes accounted.
func TestRunForkServer(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	const servers, pageSize = 3, 64 << 10
	dir := t.TempDir()
	ready, events, report := filepath.Join(dir, "ready"), filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	s := startSfwatch(t, "run", "--format", "json", "-o", events, "--report", report, "--",
		os.Args[0], "forkserver", ready, strconv.Itoa(servers))
	var addrs []string
	if err := json.Unmarshal(waitForFile(t, ready, s), &addrs); err != nil || len(addrs) != servers {
		t.Fatalf("ready file: %v %v", addrs, err)
	}
	page := make([]byte, pageSize)
	for i := range page {
		page[i] = byte('a' + i%26)
	}
	for _, addr := range addrs {
		if body := fetch(t, "http://"+addr+"/page"); !bytes.Equal(body, page) {
			t.Errorf("%s/page: %d bytes, not the page", addr, len(body))
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := s.wait(t)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	// net/http writes the first 512 bytes itself (response.ReadFrom sniffs
	// them), and the rest with sendfile.
	const want = servers * (pageSize - 512)
	bytesByPID := map[uint32]int64{}
	for _, e := range parseJSONEvents(t, string(data)) {
		if e.Ret > 0 && e.Offset == nil {
			bytesByPID[e.PID] += e.Ret
		} else if e.Errno == nil || *e.Errno != "EAGAIN" {
			t.Errorf("unexpected event %+v", e)
		}
	}
	total := int64(0)
	for _, b := range bytesByPID {
		total += b
	}
	if len(bytesByPID) != servers || total != want {
		t.Errorf("NULL-offset bytes by pid %v (total %d), want %d pids and %d bytes", bytesByPID, total, servers, want)
	}
	rep := readReport(t, report)
	if s := rep.Summary; *s.Bytes != want || *s.Events != *s.Calls || *s.Lost != 0 || *s.Violations != 0 || *s.OffsetPtr != 0 {
		t.Errorf("report summary: bytes %d events %d calls %d lost %d violations %d offset_ptr %d; want bytes %d",
			*s.Bytes, *s.Events, *s.Calls, *s.Lost, *s.Violations, *s.OffsetPtr, want)
	}
}

// TestRunNginx: nginx with sendfile on and two forked workers; its workers
// send with a pointer offset, every byte fetched is accounted for.
func TestRunNginx(t *testing.T) {
	testenv.RequirePrivileged(t)
	nginx := testenv.NeedTool(t, "nginx")
	t.Parallel()
	const fetches, size = 4, 1 << 20
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	file := make([]byte, size)
	for i := range file {
		file[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(www, "big.bin"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	pidFile := filepath.Join(dir, "nginx.pid")
	conf := filepath.Join(dir, "nginx.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root;
error_log stderr;
pid %[1]s/nginx.pid;
events { worker_connections 64; }
http {
	sendfile on;
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s/www;
	}
}
`, dir, port)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	events, report := filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	s := startSfwatch(t, "run", "--format", "json", "-o", events, "--report", report, "--",
		nginx, "-c", conf, "-p", dir+"/", "-e", "stderr")
	master, _ := strconv.Atoi(strings.TrimSpace(string(waitForFile(t, pidFile, s))))
	url := fmt.Sprintf("http://127.0.0.1:%d/big.bin", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %d; stderr:\n%s", port, s.stderr.String())
		}
	}
	// The master writes its pid file and listens before it forks.
	workers := map[uint32]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(workers) != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nginx master %d has workers %v, want 2", master, workers)
		}
		clear(workers)
		for _, f := range strings.Fields(readFileString(fmt.Sprintf("/proc/%d/task/%d/children", master, master))) {
			pid, _ := strconv.Atoi(f)
			workers[uint32(pid)] = true
		}
	}
	for range fetches {
		if body := fetch(t, url); !bytes.Equal(body, file) {
			t.Fatalf("GET %s: %d bytes, not the file", url, len(body))
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil { // graceful shutdown
		t.Fatal(err)
	}
	r := s.wait(t)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseJSONEvents(t, string(data))
	if want := accountingLine(uint64(len(evs)), uint64(len(evs)), 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want only %q", r.stderr, want)
	}
	var sent, eagain int64
	for _, e := range evs {
		if !workers[e.PID] || e.Comm != "nginx" {
			t.Errorf("event from pid %d (%s), want one of the workers %v", e.PID, e.Comm, workers)
		}
		if len(e.Violations) != 0 || e.Offset == nil || e.Offset.Before == nil || e.Offset.After == nil {
			t.Errorf("event %+v: want a pointer offset read before and after, no violation", e)
			continue
		}
		switch {
		case e.Ret > 0:
			sent += e.Ret
			if *e.Offset.After != *e.Offset.Before+e.Ret {
				t.Errorf("offset %d => %d with ret %d", *e.Offset.Before, *e.Offset.After, e.Ret)
			}
		case e.Errno != nil && *e.Errno == "EAGAIN": // a full socket buffer: nginx waits and retries
			eagain++
			if *e.Offset.After != *e.Offset.Before {
				t.Errorf("offset %d => %d with EAGAIN", *e.Offset.Before, *e.Offset.After)
			}
		default:
			t.Errorf("unexpected event %+v", e)
		}
	}
	if eagain > 0 {
		t.Logf("nginx got EAGAIN %d times", eagain)
	}
	if sent != fetches*size {
		t.Errorf("nginx sent %d bytes with sendfile, want the %d fetched", sent, fetches*size)
	}
	rep := readReport(t, report)
	if s := rep.Summary; *s.Bytes != fetches*size || *s.Calls != uint64(len(evs)) || *s.Events != *s.Calls || *s.Lost != 0 ||
		*s.Violations != 0 || *s.OffsetNull != 0 || *s.Errors != uint64(eagain) {
		t.Errorf("report summary: %+v", rep.Summary)
	}
}

func readFileString(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// TestRunUsageErrors: bad usage exits 2 with one line that names the
// problem, before anything is created.
func TestRunUsageErrors(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string // in the one line
	}{
		{[]string{"run", "--bogus", "--", "true"}, []string{"-bogus", "not defined"}},
		{[]string{"run"}, []string{"missing command"}},
		{[]string{"run", "--"}, []string{"missing command"}},
		{[]string{"run", "-c"}, []string{"missing command"}},
		{[]string{"run", "--format", "xml", "--", "true"}, []string{"--format", `"xml"`}},
		{[]string{"run", "--ringbuf-size", "1000", "--", "true"}, []string{"--ringbuf-size", "1000", "power of two"}},
		{[]string{"run", "--ringbuf-size", "lots", "--", "true"}, []string{"ringbuf-size", "lots"}},
		{[]string{"run", "--expect", "calls=>1", "--", "true"}, []string{"bad expectation", `"calls=>1"`}},
		{[]string{"run", "--expect", "frobs>1", "--", "true"}, []string{"bad expectation", `unknown key "frobs"`}},
		{[]string{"run", "--expect", "calls>=-1", "--", "true"}, []string{"bad expectation", `"-1"`}},
		{[]string{"run", "--expect", "calls>=", "--", "true"}, []string{"bad expectation"}},
		{[]string{"run", "--sample", "0", "--", "true"}, []string{"--sample 0"}},
		{[]string{"run", "-o", "/nonexistent/out.txt", "--", "true"}, []string{"-o /nonexistent/out.txt", "directory /nonexistent does not exist"}},
		{[]string{"run", "--report", "/nonexistent/r.json", "--", "true"}, []string{"--report", "directory /nonexistent does not exist"}},
		{[]string{"attach", "--pid", "1", "--junit", "/nonexistent/j.xml"}, []string{"--junit", "directory /nonexistent does not exist"}},
		{[]string{}, []string{"missing command"}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`}},
		{[]string{"selftest", "extra"}, []string{"selftest takes no arguments"}},
		{[]string{"doctor", "--bogus"}, []string{"doctor", "-bogus"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := sfwatch(t, nil, tc.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want 2", r.code)
			}
			if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || !strings.HasPrefix(r.stderr, "sfwatch: ") {
				t.Errorf("stdout %q stderr %q, want one line on stderr", r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not name %q", r.stderr, w)
				}
			}
		})
	}
}

// TestVersion: one line on stdout, naming the Go version and platform.
func TestVersion(t *testing.T) {
	testenv.RequirePrivileged(t) // for assertNothingLeft
	t.Parallel()
	for _, arg := range []string{"version", "--version"} {
		r := sfwatch(t, nil, arg)
		want := fmt.Sprintf(" %s/%s %s\n", runtime.GOOS, runtime.GOARCH, runtime.Version())
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "sfwatch ") || !strings.HasSuffix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("sfwatch %s: exit %d, stdout %q, stderr %q", arg, r.code, r.stdout, r.stderr)
		}
	}
}

// sfwatchForNobody copies the sfwatch binary into a directory that nobody
// (uid 65534) can reach and run it from.
func sfwatchForNobody(t *testing.T) (bin, dir string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sfwatch-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "sfwatch")
	data, err := os.ReadFile(sfwatchBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// startRetryingBusy starts the command newCmd makes, whose binary the test
// has just written: a fork by a parallel test between that write and its
// close holds the file open for writing until its exec, and exec fails
// with ETXTBSY meanwhile. A Cmd starts once, so each try makes a new one.
func startRetryingBusy(newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	for i := 0; ; i++ {
		cmd := newCmd()
		err := cmd.Start()
		if !errors.Is(err, syscall.ETXTBSY) || i == 50 {
			return cmd, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunNotRoot: without root, run says so in one line and exits 125.
func TestRunNotRoot(t *testing.T) {
	testenv.RequirePrivileged(t) // to switch to nobody
	t.Parallel()
	bin, dir := sfwatchForNobody(t)
	for _, args := range [][]string{
		{"run", "--", "true"},
		{"run", "-c", "--expect", "calls>=1", "--", "true"},
		{"selftest"},
		{"attach", "--pid", "1"},
	} {
		r := runAsNobody(t, bin, dir, nil, args...)
		if r.code != exitFailed || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, "needs root") || !strings.Contains(r.stderr, "sudo") || !strings.Contains(r.stderr, args[0]) {
			t.Errorf("%v as nobody: exit %d, stdout %q, stderr %q; want 125 and one line saying %s needs root and sudo",
				args, r.code, r.stdout, r.stderr, args[0])
		}
	}
}

// runAsNobody runs bin (from sfwatchForNobody) with args as uid 65534,
// with the ambient capabilities caps, and checks it left nothing behind.
func runAsNobody(t *testing.T, bin, dir string, caps []uintptr, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd, err := startRetryingBusy(func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.WaitDelay = waitDelay
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: caps}
		stdout.Reset()
		stderr.Reset()
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd
	})
	if err != nil {
		t.Fatalf("starting %v as nobody: %v", args, err)
	}
	cmd.Wait()
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode(), pid: cmd.Process.Pid}
	assertNothingLeft(t, r.pid)
	return r
}

// TestRunUser: --user, or the user behind sudo by default, runs the
// command as that user, still traced.
func TestRunUser(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	// A copy of this binary that nobody can reach and run.
	dir, err := os.MkdirTemp("", "sfwatch-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(os.Args[0]))
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		env   []string
		flags []string
	}{
		{"--user", nil, []string{"--user", "65534"}},
		{"sudo", []string{"SUDO_UID=65534", "SUDO_GID=65534"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"run", "--format", "json"}, tc.flags...), "--", bin, "offsets")
			r := sfwatch(t, append(workloadEnv(), tc.env...), args...)
			if r.code != 0 || !strings.Contains(r.stdout, "\nuid 65534\n") {
				t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			calls := offsetsManifest(t, r.stdout)
			out := lines(r.stderr)
			if len(out) != len(calls)+1 || out[len(calls)] != accountingLine(9, 9, 0) {
				t.Fatalf("stderr:\n%s", r.stderr)
			}
			for i, e := range parseJSONEvents(t, strings.Join(out[:len(calls)], "\n")) {
				if c := calls[i]; e.TID != c.Tid || e.Ret != c.Ret || e.OutFD != c.OutFD {
					t.Errorf("event %d: %+v, want %+v", i, e, c)
				}
			}
		})
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

// TestSelftest: the built-in self-test passes here.
func TestSelftest(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := sfwatch(t, nil, "selftest")
	if r.code != 0 || !strings.Contains(r.stderr, "sfwatch selftest: PASS: ") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// TestDoctor: every required check passes, in text and in JSON.
func TestDoctor(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := sfwatch(t, nil, "doctor")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "CHECK ") || strings.Contains(r.stdout, "MISSING") {
		t.Errorf("doctor: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = sfwatch(t, nil, "doctor", "--json")
	if r.code != 0 {
		t.Fatalf("doctor --json: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	var checks []struct {
		Check    string `json:"check"`
		OK       *bool  `json:"ok"`
		Required *bool  `json:"required"`
		Detail   string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	seen := map[string]bool{}
	for _, c := range checks {
		if c.OK == nil || c.Required == nil {
			t.Errorf("check %q lacks ok or required", c.Check)
			continue
		}
		seen[c.Check] = true
		if *c.Required && !*c.OK {
			t.Errorf("required check %q failed: %s", c.Check, c.Detail)
		}
	}
	want := []string{"privileges", "kernel", "tracefs", "attach mode", "tracepoint signal_deliver",
		"cgroup2", "ring buffer", "cgroup group", "CLONE_INTO_CGROUP", "BPF programs"}
	if loader.AttachMode().Kprobes {
		want = append(want, "kprobe "+loader.KprobeSymbol)
	} else {
		want = append(want, "tracepoint sys_enter_sendfile64", "tracepoint sys_exit_sendfile64")
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("doctor --json has no check %q", name)
		}
	}
}

// TestRunSignalDuringSetup: a SIGTERM that comes while sfwatch is still
// setting up (its group exists, the programs load, the child may not run
// yet) neither kills sfwatch, which would leave its group behind and print
// nothing, nor is lost: the child gets it, once, as soon as it runs.
func TestRunSignalDuringSetup(t *testing.T) {
	testenv.RequirePrivileged(t)
	codes := map[int]int{}
	for range 10 {
		ready := filepath.Join(t.TempDir(), "ready")
		s := startSfwatch(t, "run", "--", os.Args[0], "count-sigterm", ready)
		pattern := groupPattern(t, s.cmd.Process.Pid)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Microsecond) {
			if m, _ := filepath.Glob(pattern); len(m) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sfwatch created no group; stderr:\n%s", s.stderr.String())
			}
		}
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r := s.wait(t)
		if ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Errorf("a SIGTERM during set-up killed sfwatch itself (%v); stderr %q", ws.Signal(), r.stderr)
			continue
		}
		// The child got it before installing its handler (143), or after (1).
		codes[r.code]++
		if r.code != 128+int(syscall.SIGTERM) && r.code != 1 {
			t.Errorf("exit %d, want 143 or 1; stderr:\n%s", r.code, r.stderr)
		}
		if want := accountingLine(0, 0, 0) + "\n"; r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
	t.Logf("exit codes: %v", codes)
}

// TestRunSignalAfterChildExit: a SIGTERM that comes after the child has
// exited, while sfwatch detaches and reports, does not kill sfwatch before
// it has reported and removed its group.
func TestRunSignalAfterChildExit(t *testing.T) {
	testenv.RequirePrivileged(t)
	hit := 0
	for range 10 {
		ready := filepath.Join(t.TempDir(), "ready")
		s := startSfwatch(t, "run", "--", "sh", "-c", `: > "$1"`, "sh", ready)
		waitForFile(t, ready, s)
		// Once the group is empty the child has exited: signal sfwatch
		// then, if it is still there.
		pattern := groupPattern(t, s.cmd.Process.Pid)
		signalled := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
			m, _ := filepath.Glob(pattern)
			if len(m) == 0 {
				break // sfwatch is done
			}
			if ev, err := os.ReadFile(filepath.Join(m[0], "cgroup.events")); err == nil && strings.Contains(string(ev), "populated 0") {
				signalled = s.cmd.Process.Signal(syscall.SIGTERM) == nil
				break
			}
		}
		r := s.wait(t)
		if !signalled {
			continue
		}
		hit++
		if ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Errorf("a SIGTERM after the child exited killed sfwatch (%v); stderr %q", ws.Signal(), r.stderr)
			continue
		}
		if want := accountingLine(0, 0, 0) + "\n"; r.code != 0 || r.stderr != want {
			t.Errorf("exit %d, stderr %q; want 0 and %q", r.code, r.stderr, want)
		}
	}
	t.Logf("signalled sfwatch %d times out of 10 between its child's exit and its own", hit)
}

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
// restart, and the call that completes. testdata/eintr.c makes both.
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
	call := fmt.Sprintf("sendfile(%d, %d, NULL, 4096)", outFD, inFD)
	want := []string{call + " = -1 EINTR (Interrupted system call)", call + " = 4096", accountingLine(2, 2, 0)}
	got := lines(r.stderr)
	if len(got) != len(want) {
		t.Fatalf("stderr:\n%s\nwant the lines %q", r.stderr, want)
	}
	for i, w := range want {
		if !strings.HasSuffix(got[i], w) {
			t.Errorf("line %d: %q, want it to end in %q", i+1, got[i], w)
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

// TestRunMissingCommandCreatesNothing: a command that is not found fails
// before the output files exist.
func TestRunMissingCommandCreatesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	out, report := filepath.Join(dir, "out.txt"), filepath.Join(dir, "r.json")
	r := sfwatch(t, nil, "run", "-o", out, "--report", report, "--", "/nonexistent/server")
	if r.code != exitNotFound || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("exit %d stderr %q, want 127 and one line", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v behind", entries)
	}
}

// TestRunOutputPipeClosed: when whoever reads sfwatch's stderr goes away
// (sfwatch run ... 2>&1 | head), sfwatch is not killed by SIGPIPE with its
// group left behind: the child runs to its end, everything is cleaned up,
// and the exit code says sfwatch failed.
func TestRunOutputPipeClosed(t *testing.T) {
	testenv.RequirePrivileged(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close() // nobody reads: the first write fails
	const n = 20000
	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sfwatchBin, "run", "--report", report, "--", os.Args[0], "loop", "1", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), workloadEnv()...)
	cmd.Stderr = pw
	err = cmd.Run()
	pw.Close()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("sfwatch was killed by %v", ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitFailed {
		t.Errorf("exit %d (%v), want %d", code, err, exitFailed)
	}
	// The workload ran to its end, and the report was still written.
	if r := readReport(t, report); *r.Summary.Calls != n || *r.ExitCode != 0 {
		t.Errorf("report: calls %d, exit code %d; want %d, 0", *r.Summary.Calls, *r.ExitCode, n)
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// groupPattern globs the groups that sfwatch process pid creates.
func groupPattern(t *testing.T, pid int) string {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(mount, fmt.Sprintf("sfwatch-%d-*", pid))
}

// TestRunNonBlockingSocket: a non-blocking socket that fills up gives full
// transfers, a short one (legal: class short, no violation) and EAGAIN
// (offset unchanged), each exactly as the workload saw it.
func TestRunNonBlockingSocket(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	report := filepath.Join(t.TempDir(), "report.json")
	r := runWorkload(t, []string{"--report", report, "--expect", "violations==0", "--expect", "short>=1", "--expect", "errors==1"}, "nonblock")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	calls := parseManifest(t, r.stdout)
	last := calls[len(calls)-1]
	if last.Ret != -11 || last.OffsetAfter != last.OffsetBefore {
		t.Fatalf("the workload's last call: %+v, want EAGAIN with the offset unchanged", last)
	}
	short := 0
	for _, c := range calls[:len(calls)-1] {
		if c.Ret <= 0 {
			t.Fatalf("the workload's call %+v before EAGAIN", c)
		}
		if uint64(c.Ret) < c.Count {
			short++
		}
	}
	if short == 0 {
		t.Fatalf("no short transfer before EAGAIN: %+v", calls)
	}
	for _, c := range calls {
		if want := straceLine(t, c, testComm()); !strings.Contains(r.stderr, want+"\n") {
			t.Errorf("stderr lacks %q", want)
		}
	}
	s := readReport(t, report).Summary
	if *s.Calls != uint64(len(calls)) || *s.Short != uint64(short) || *s.Errors != 1 || *s.Violations != 0 {
		t.Errorf("report: calls %d short %d errors %d violations %d; want %d %d 1 0", *s.Calls, *s.Short, *s.Errors, *s.Violations, len(calls), short)
	}
}

// TestRunTimestamps: -ttt puts each call's start time, as Unix time, after
// the thread prefix, as strace does; the times fall inside the run and
// follow the workload's order, and the rest of each line is unchanged.
func TestRunTimestamps(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	begin := time.Now()
	r := runWorkload(t, []string{"-ttt"}, "offsets")
	end := time.Now()
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	calls := offsetsManifest(t, r.stdout)
	got := lines(r.stderr)
	if len(got) != len(calls)+1 {
		t.Fatalf("stderr:\n%s", r.stderr)
	}
	stamp := regexp.MustCompile(`^(\[pid +\d+<[^>]*>\] )(\d+)\.(\d{6}) (.*)$`)
	var prev time.Time
	for i, c := range calls {
		m := stamp.FindStringSubmatch(got[i])
		if m == nil {
			t.Fatalf("line %q has no -ttt time after its prefix", got[i])
		}
		sec, _ := strconv.ParseInt(m[2], 10, 64)
		usec, _ := strconv.ParseInt(m[3], 10, 64)
		at := time.Unix(sec, usec*1000)
		if at.Before(begin.Add(-time.Millisecond)) || at.After(end) || at.Before(prev) {
			t.Errorf("line %d at %v: outside the run [%v, %v] or before the line above", i+1, at, begin, end)
		}
		prev = at
		if want := straceLine(t, c, testComm()); m[1]+m[4] != want {
			t.Errorf("line %d without its time: %q, want %q", i+1, m[1]+m[4], want)
		}
	}
}
