package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// Every form of strace's command line that sfwatch honours, as strace's
// getopt reads it.
func TestParseStraceArgs(t *testing.T) {
	cmd := []string{"prog", "-x"}
	for _, tc := range []struct {
		args []string
		want straceOptions
	}{
		{[]string{"prog", "-x"}, straceOptions{argv: cmd}},
		{[]string{"-f", "-q", "prog", "-x"}, straceOptions{follow: 1, quiet: 1, argv: cmd}},
		{[]string{"-fq", "prog", "-x"}, straceOptions{follow: 1, quiet: 1, argv: cmd}},
		{[]string{"-ff", "-o", "out", "prog", "-x"}, straceOptions{follow: 2, output: "out", argv: cmd}},
		{[]string{"-ffoout", "prog", "-x"}, straceOptions{follow: 2, output: "out", argv: cmd}},
		{[]string{"-qq", "prog", "-x"}, straceOptions{quiet: 2, argv: cmd}},
		{[]string{"-qqqq", "prog", "-x"}, straceOptions{quiet: 3, argv: cmd}},
		{[]string{"-oout", "prog", "-x"}, straceOptions{output: "out", argv: cmd}},
		{[]string{"-e", "trace=sendfile", "prog", "-x"}, straceOptions{traceSet: true, argv: cmd}},
		{[]string{"-etrace=sendfile64", "prog", "-x"}, straceOptions{traceSet: true, argv: cmd}},
		{[]string{"-e", "t=sendfile,sendfile64", "prog", "-x"}, straceOptions{traceSet: true, argv: cmd}},
		{[]string{"-e", "sendfile", "prog", "-x"}, straceOptions{traceSet: true, argv: cmd}},
		{[]string{"-e", "trace=?sendfile64", "prog", "-x"}, straceOptions{traceSet: true, argv: cmd}},
		{[]string{"-e", "signal=none", "-e", "quiet=attach", "prog", "-x"}, straceOptions{argv: cmd}},
		{[]string{"-T", "-t", "prog", "-x"}, straceOptions{durations: true, timestamps: 1, argv: cmd}},
		{[]string{"-tt", "prog", "-x"}, straceOptions{timestamps: 2, argv: cmd}},
		{[]string{"-ttt", "prog", "-x"}, straceOptions{timestamps: 3, argv: cmd}},
		{[]string{"-c", "prog", "-x"}, straceOptions{summary: 'c', argv: cmd}},
		{[]string{"-C", "prog", "-x"}, straceOptions{summary: 'C', argv: cmd}},
		{[]string{"-cC", "prog", "-x"}, straceOptions{summary: 'C', argv: cmd}},
		{[]string{"-u", "nobody", "prog", "-x"}, straceOptions{user: "nobody", argv: cmd}},
		{[]string{"-a", "60", "prog", "-x"}, straceOptions{column: 60, argv: cmd}},
		{[]string{"-a0", "prog", "-x"}, straceOptions{column: 1, argv: cmd}},
		{[]string{"-s", "1024", "prog", "-x"}, straceOptions{argv: cmd}},
		{[]string{"-p", "42"}, straceOptions{pid: 42}},
		{[]string{"-fp42", "-p", "42"}, straceOptions{follow: 1, pid: 42}},
		{[]string{"--", "prog", "-x"}, straceOptions{argv: cmd}},
		{[]string{"-f", "--", "-prog"}, straceOptions{follow: 1, argv: []string{"-prog"}}},
		{[]string{"-h"}, straceOptions{help: true}},
		{[]string{"-V"}, straceOptions{version: true}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseStraceArgs(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.argv) == 0 {
				got.argv = nil // empty, as the want
			}
			if tc.want.column == 0 {
				tc.want.column = 40
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// What sfwatch cannot honour is refused with one line naming it, status 1
// (as straceMain turns it into), before anything starts.
func TestParseStraceArgsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "must have PROG [ARGS] or -p PID"},
		{[]string{"-f"}, "must have PROG [ARGS] or -p PID"},
		{[]string{"-Q", "prog"}, "invalid option -- 'Q'"},
		{[]string{"-fQ", "prog"}, "invalid option -- 'Q'"},
		{[]string{"-k", "prog"}, "-k: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)"},
		{[]string{"-y", "prog"}, "-y: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)"},
		{[]string{"-Y", "prog"}, "-Y: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)"},
		{[]string{"-X", "raw", "prog"}, "-X: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)"},
		{[]string{"-P", "/etc/passwd", "prog"}, "-P: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)"},
		{[]string{"-o"}, "option requires an argument -- 'o'"},
		{[]string{"-f", "-e"}, "option requires an argument -- 'e'"},
		{[]string{"--follow-forks", "prog"}, "option '--follow-forks' is not one sfwatch honours as strace; see strace -h"},
		{[]string{"--output=x", "prog"}, "option '--output' is not one sfwatch honours as strace; see strace -h"},
		{[]string{"-e", "trace=read", "prog"}, "-e trace=read: sfwatch traces sendfile and sendfile64 only, not 'read'"},
		{[]string{"-e", "trace=sendfile,write", "prog"}, "-e trace=sendfile,write: sfwatch traces sendfile and sendfile64 only, not 'write'"},
		{[]string{"-e", "trace=%network", "prog"}, "-e trace=%network: sfwatch traces sendfile and sendfile64 only, not '%network'"},
		{[]string{"-e", "trace=!sendfile", "prog"}, "-e trace=!sendfile: sfwatch traces sendfile and sendfile64 only, not '!sendfile'"},
		{[]string{"-e", "open", "prog"}, "-e open: sfwatch traces sendfile and sendfile64 only, not 'open'"},
		{[]string{"-e", "trace=", "prog"}, "-e trace=: empty system call list"},
		{[]string{"-e", "signal=all", "prog"}, "-e signal=all: sfwatch shows no signals; only signal=none is honoured"},
		{[]string{"-e", "inject=sendfile:error=EIO", "prog"}, "-e inject=sendfile:error=EIO: sfwatch cannot honour this strace qualifier (it sees sendfile calls only)"},
		{[]string{"-e", "verbose=all", "prog"}, "-e verbose=all: sfwatch cannot honour this strace qualifier (it sees sendfile calls only)"},
		{[]string{"-a", "x", "prog"}, "invalid -a argument: 'x'"},
		{[]string{"-a", "-1", "prog"}, "invalid -a argument: '-1'"},
		{[]string{"-s", "many", "prog"}, "invalid -s argument: 'many'"},
		{[]string{"-p", "0"}, "invalid process id: '0'"},
		{[]string{"-p", "x"}, "invalid process id: 'x'"},
		{[]string{"-p", "1", "-p", "2"}, "-p 2: sfwatch follows one process (-p 1 given already)"},
		{[]string{"-p", "1", "prog"}, "-p PID and PROG both given: sfwatch traces one or the other"},
		{[]string{"-o", "|cat", "prog"}, "-o |cat: sfwatch writes to files only, not to a command"},
		{[]string{"-ff", "-o", "x", "-c", "prog"}, "-ff -o FILE with -c: sfwatch writes the -c table to one file only; drop -ff or -c"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseStraceArgs(tc.args)
			if err == nil {
				t.Fatal("accepted")
			}
			if _, ok := err.(straceUsageError); !ok || err.Error() != tc.want {
				t.Errorf("error %q (%T), want %q", err, err, tc.want)
			}
		})
	}
}

// The whole of a refusal: one line on stderr, status 1, nothing started
// (no root needed to be refused).
func TestStraceRefusalStatus(t *testing.T) {
	r := sfwatch(t, nil, "strace", "-k", "true")
	if r.code != straceExitUsage || r.stderr != "strace: -k: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)\n" || r.stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestStraceTextOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want events.Prefix
	}{
		{[]string{"p"}, events.PrefixNone},
		{[]string{"-f", "p"}, events.PrefixPid},
		{[]string{"-ff", "p"}, events.PrefixPid},
		{[]string{"-f", "-o", "x", "p"}, events.PrefixFile},
		{[]string{"-ff", "-o", "x", "p"}, events.PrefixNone},
	} {
		o, err := parseStraceArgs(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.textOptions(); got.Prefix != tc.want || got.Column != 40 {
			t.Errorf("%q: prefix %d column %d, want %d 40", tc.args, got.Prefix, got.Column, tc.want)
		}
	}
}

// strace -c's table, as strace 6.1 prints it for the same counts.
func TestWriteStraceTable(t *testing.T) {
	var b bytes.Buffer
	if err := writeStraceTable(&b, 6, 2, 105_999); err != nil {
		t.Fatal(err)
	}
	want := `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.000105          17         6         2 sendfile
------ ----------- ----------- --------- --------- ----------------
100.00    0.000105          17         6         2 total
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeStraceTable(&b, 0, 0, 0)
	if b.Len() != 0 {
		t.Errorf("no call: got %q, want nothing, as strace", b.String())
	}
}

// Go's own net/http TestLinuxSendfile runs `strace -f -q` and looks for a
// sendfile line: with sfwatch as the only strace on PATH, it must pass,
// not skip.
func TestStraceGoNetHTTP(t *testing.T) {
	testenv.RequirePrivileged(t)
	goBin := testenv.NeedTool(t, "go")
	out, err := exec.Command(goBin, "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	goroot := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(goroot, "src", "net", "http", "fs_test.go")); err != nil {
		t.Skipf("the Go toolchain's net/http source is absent (%v): nothing to run", err)
	}
	dir := t.TempDir()
	if err := os.Symlink(sfwatchBin, filepath.Join(dir, "strace")); err != nil {
		t.Fatal(err)
	}
	// PATH: sfwatch as strace, go, and no directory with a real strace;
	// cgo off, since gcc may live next to strace.
	path := []string{dir, filepath.Dir(goBin)}
	for _, p := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(p, "strace")); err != nil && p != "" {
			path = append(path, p)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "net/http", "-run", "^TestLinuxSendfile$", "-count=1", "-v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+strings.Join(path, string(filepath.ListSeparator)), "CGO_ENABLED=0")
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "--- PASS: TestLinuxSendfile ") {
		t.Fatalf("go test net/http -run TestLinuxSendfile: %v; want it to pass:\n%s", err, got)
	}
	t.Logf("%s", got)
}

// straceFormLine is strace's line for the call of line (a straceLine)
// after prefix, "= " at column 40 counted from the line's start.
func straceFormLine(t *testing.T, prefix, line string) string {
	t.Helper()
	m := regexp.MustCompile(`^\[pid +\d+<[^>]*>\] (.*?\)) += (.*)$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("%q is no strace line", line)
	}
	return fmt.Sprintf("%-*s= %s", 40, prefix+m[1]+" ", m[2])
}

// sfwatch as strace on the offsets workload prints strace's lines for its
// calls, in each of strace's output forms, and exits with its status.
func TestStraceOutput(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	strace := func(args ...string) result {
		return sfwatch(t, workloadEnv(), append(append([]string{"strace"}, args...), os.Args[0], "offsets")...)
	}

	// -f on stderr: "[pid N] "; no -e: one notice first.
	r := strace("-f")
	calls := offsetsManifest(t, r.stdout)
	got := lines(r.stderr)
	if r.code != 0 || len(got) != len(calls)+1 || !strings.HasPrefix(got[0], "strace: sfwatch shows sendfile calls only") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for i, c := range calls {
		if want := straceFormLine(t, fmt.Sprintf("[pid %5d] ", c.Tid), straceLine(t, c, testComm())); got[i+1] != want {
			t.Errorf("line %d: %q, want %q", i+1, got[i+1], want)
		}
	}

	// -f -o FILE: "N " in the file, -C's table after the lines; -qq and
	// -e: nothing on stderr.
	out := filepath.Join(dir, "trace")
	r = strace("-fqq", "-e", "trace=sendfile", "-C", "-o", out)
	calls = offsetsManifest(t, r.stdout)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	text, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got = lines(string(text))
	if len(got) != len(calls)+5 {
		t.Fatalf("%s:\n%s", out, text)
	}
	for i, c := range calls {
		if want := straceFormLine(t, fmt.Sprintf("%-5d ", c.Tid), straceLine(t, c, testComm())); got[i] != want {
			t.Errorf("line %d: %q, want %q", i+1, got[i], want)
		}
	}
	if row := strings.Fields(got[len(calls)+2]); len(row) != 6 || row[3] != "9" || row[4] != "3" || row[5] != "sendfile" {
		t.Errorf("-C table row %q, want 9 calls, 3 errors", got[len(calls)+2])
	}

	// -ff -o FILE: FILE.TID, no prefix.
	r = strace("-ff", "-qq", "-o", out)
	calls = offsetsManifest(t, r.stdout)
	text, err = os.ReadFile(fmt.Sprintf("%s.%d", out, calls[0].Tid))
	if r.code != 0 || err != nil {
		t.Fatalf("exit %d, %v, stderr:\n%s", r.code, err, r.stderr)
	}
	if want := straceFormLine(t, "", straceLine(t, calls[0], testComm())); lines(string(text))[0] != want {
		t.Errorf("%s.%d starts %q, want %q", out, calls[0].Tid, text, want)
	}

	// The command's status is strace's.
	r = sfwatch(t, nil, "strace", "-qq", "sh", "-c", "exit 3")
	if r.code != 3 || r.stderr != "" {
		t.Errorf("exit %d, want 3; stderr %q", r.code, r.stderr)
	}
}

// strace -f -p PID shows PID's threads' calls and no other process's, even
// one in the same cgroup, until SIGINT; then status 0.
func TestStraceAttachPID(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func(threads string) *exec.Cmd {
		c := exec.CommandContext(ctx, os.Args[0], "loop", threads, "1000000000")
		c.Env = append(os.Environ(), workloadEnv()...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	target, other := start("2"), start("1")

	out := filepath.Join(t.TempDir(), "trace")
	tracer := exec.CommandContext(ctx, sfwatchBin, "strace", "-f", "-o", out, "-e", "trace=sendfile", "-p", strconv.Itoa(target.Process.Pid))
	var stderr lockedBuffer // read while the tracer writes
	tracer.Stderr = &stderr
	if err := tracer.Start(); err != nil {
		t.Fatal(err)
	}
	attached := fmt.Sprintf("strace: Process %d attached\n", target.Process.Pid)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), attached); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 30 s: %s", attached, stderr.String())
		}
	}
	time.Sleep(300 * time.Millisecond)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", target.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	tracer.Process.Signal(os.Interrupt)
	err = tracer.Wait()
	if err != nil || stderr.String() != attached+fmt.Sprintf("strace: Process %d detached\n", target.Process.Pid) {
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
	assertNothingLeft(t, tracer.Process.Pid)

	threads := map[string]bool{}
	for _, task := range tasks {
		threads[task.Name()] = true
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		tid, _, _ := strings.Cut(sc.Text(), " ")
		if !threads[tid] {
			t.Fatalf("line %d %q: thread %s is not one of pid %d's (%v); pid %d is the other", n, sc.Text(), tid, target.Process.Pid, threads, other.Process.Pid)
		}
	}
	if n == 0 {
		t.Errorf("no call of pid %d shown in 300 ms", target.Process.Pid)
	}
}
