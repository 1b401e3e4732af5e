package main

// The command line: sfwatch exits with the child's status, or 126/127 for a
// command that cannot run, or 2 with one line for bad usage, before anything
// is created; version prints one line.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

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

// TestRunMissingCommandCreatesNothing: a command that is not found fails
// before the output files exist; only the report CI asked for is written
// (TestReportsCommandNotStarted says what it holds).
func TestRunMissingCommandCreatesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	out, report := filepath.Join(dir, "out.txt"), filepath.Join(dir, "r.json")
	r := sfwatch(t, nil, "run", "-o", out, "--report", report, "--", "/nonexistent/server")
	if r.code != exitNotFound || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("exit %d stderr %q, want 127 and one line", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "r.json" {
		t.Errorf("left %v behind, want r.json only", entries)
	}
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
