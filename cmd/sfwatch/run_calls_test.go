package main

// Calls that are hard to see or to classify: a sendfile that is the child's
// very first system call, and a non-blocking socket's full and short
// transfers and EAGAIN, each exactly as the program saw it.

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

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
