package main

// Helpers of every test of the package: the traced command's name and pid,
// the strace line and the accounting line a call must give, the counts and
// the --report document read independently of sfwatch's own types,
// starting sfwatch in the background and waiting for it, fetching a page,
// and running sfwatch as nobody.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// testComm is the command name the kernel gives this test binary when a
// test re-executes it as a workload (TASK_COMM_LEN is 16, NUL included).
func testComm() string {
	c := filepath.Base(os.Args[0])
	if len(c) > 15 {
		c = c[:15]
	}
	return c
}

// workloadPID reads the "pid N" line a workload prints on stdout.
func workloadPID(t *testing.T, stdout string) int {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "pid "); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			return pid
		}
	}
	t.Fatalf("no pid line in the workload's output:\n%s", stdout)
	return 0
}

// errnoText is how strace prints the errors the workloads provoke.
var errnoText = map[int64]string{
	-4:  "EINTR (Interrupted system call)",
	-9:  "EBADF (Bad file descriptor)",
	-11: "EAGAIN (Resource temporarily unavailable)",
	-22: "EINVAL (Invalid argument)",
	-29: "ESPIPE (Illegal seek)",
}

var errnoNames = map[int64]string{-9: "EBADF", -22: "EINVAL", -29: "ESPIPE"}

// straceLine is the line sfwatch must print for c, written from strace's
// rules rather than from sfwatch's code: strace -f's line ("[pid %5d] ",
// the call, "= " at column 40 with at least one space before it, then the
// result) with "<comm>" added after the pid.
func straceLine(t *testing.T, c directCall, comm string) string {
	t.Helper()
	return straceLineAt(t, c, comm, "")
}

// straceLineAt is straceLine with a -t, -tt or -ttt time ("S.UUUUUU ")
// after the prefix: strace counts it towards the column.
func straceLineAt(t *testing.T, c directCall, comm, stamp string) string {
	t.Helper()
	off := "NULL"
	if !c.Null {
		off = fmt.Sprintf("[%d]", c.OffsetBefore)
		if c.Ret > 0 {
			off += fmt.Sprintf(" => [%d]", c.OffsetAfter)
		}
	}
	pid := fmt.Sprintf("[pid %5d", c.Tid)
	line := fmt.Sprintf("%s] %ssendfile(%d, %d, %s, %d) ", pid, stamp, c.OutFD, c.InFD, off, c.Count)
	for len(line) < 40 {
		line += " "
	}
	res := strconv.FormatInt(c.Ret, 10)
	if c.Ret < 0 {
		text, ok := errnoText[c.Ret]
		if !ok {
			t.Fatalf("no strace text for ret %d", c.Ret)
		}
		res = "-1 " + text
	}
	return pid + "<" + comm + ">" + line[len(pid):] + "= " + res
}

// accountingLine is the last line of every run.
func accountingLine(calls, events, lost uint64) string {
	return fmt.Sprintf("sfwatch: %d calls counted in the kernel, %d events delivered, %d lost", calls, events, lost)
}

// lines splits output into lines, without the final empty one.
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// manifestCounts are the --expect quantities of a manifest's calls,
// computed from what the workload says it did.
type manifestCounts struct {
	calls, bytes, errors, short, eof, empty, offsetNull, offsetPtr uint64
	byErrno                                                        map[string]uint64
}

func countManifest(t *testing.T, calls []directCall) manifestCounts {
	t.Helper()
	m := manifestCounts{calls: uint64(len(calls)), byErrno: map[string]uint64{}}
	for _, c := range calls {
		switch {
		case c.Ret < 0:
			m.errors++
			m.byErrno[errnoNames[c.Ret]]++
		case c.Ret == 0 && c.Count == 0:
			m.empty++ // asked for nothing
		case c.Ret == 0:
			m.eof++
		default:
			m.bytes += uint64(c.Ret)
			if uint64(c.Ret) < c.Count {
				m.short++
			}
		}
		if c.Null {
			m.offsetNull++
		} else {
			m.offsetPtr++
		}
	}
	return m
}

// value returns the manifest's count for an --expect key.
func (m manifestCounts) value(t *testing.T, key string) uint64 {
	t.Helper()
	switch key {
	case "calls":
		return m.calls
	case "bytes":
		return m.bytes
	case "errors":
		return m.errors
	case "short":
		return m.short
	case "eof":
		return m.eof
	case "empty":
		return m.empty
	case "offset_null":
		return m.offsetNull
	case "offset_ptr":
		return m.offsetPtr
	case "violations", "lost":
		return 0
	}
	t.Fatalf("unknown key %q", key)
	return 0
}

// reportDoc is the --report document as the README documents it, read
// independently of the structs that write it.
type reportDoc struct {
	Version  string    `json:"version"`
	Command  []string  `json:"command"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	ExitCode *int      `json:"exit_code"`
	Summary  struct {
		Calls       *uint64 `json:"calls"`
		Bytes       *uint64 `json:"bytes"`
		Errors      *uint64 `json:"errors"`
		Short       *uint64 `json:"short"`
		EOF         *uint64 `json:"eof"`
		Empty       *uint64 `json:"empty"`
		OffsetNull  *uint64 `json:"offset_null"`
		OffsetPtr   *uint64 `json:"offset_ptr"`
		Violations  *uint64 `json:"violations"`
		Events      *uint64 `json:"events"`
		Lost        *uint64 `json:"lost"`
		SampledOut  *uint64 `json:"sampled_out"`
		Restarts    *uint64 `json:"restarts"`
		Skipped     *uint64 `json:"skipped"`
		Escaped     *uint64 `json:"escaped"`
		MissedExits *uint64 `json:"missed_exits"`
		P50Ns       *int64  `json:"latency_p50_ns"`
		P99Ns       *int64  `json:"latency_p99_ns"`
		MaxNs       *int64  `json:"latency_max_ns"`
	} `json:"summary"`
	ErrorsByErrno    map[string]uint64 `json:"errors_by_errno"`
	ViolationsByRule map[string]uint64 `json:"violations_by_rule"`
	SkippedByProgram map[string]uint64 `json:"skipped_by_program"`
	Expectations     []struct {
		Expr      string            `json:"expr"`
		OK        *bool             `json:"ok"`
		Actual    *uint64           `json:"actual"`
		Why       string            `json:"why"`
		Offending []json.RawMessage `json:"offending"`
	} `json:"expectations"`
	FirstViolations []json.RawMessage `json:"first_violations"`
}

// readReport parses a --report file; every summary field must be there.
func readReport(t *testing.T, path string) reportDoc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading report: %v", err)
	}
	var r reportDoc
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("parsing report: %v\n%s", err, data)
	}
	s := r.Summary
	for name, p := range map[string]*uint64{
		"calls": s.Calls, "bytes": s.Bytes, "errors": s.Errors, "short": s.Short, "eof": s.EOF,
		"empty": s.Empty, "offset_null": s.OffsetNull, "offset_ptr": s.OffsetPtr, "violations": s.Violations,
		"events": s.Events, "lost": s.Lost, "sampled_out": s.SampledOut, "restarts": s.Restarts,
		"skipped": s.Skipped, "escaped": s.Escaped, "missed_exits": s.MissedExits,
	} {
		if p == nil {
			t.Fatalf("report: summary.%s missing\n%s", name, data)
		}
	}
	if s.P50Ns == nil || s.P99Ns == nil || s.MaxNs == nil || r.ExitCode == nil {
		t.Fatalf("report: latency or exit_code missing\n%s", data)
	}
	// Every program's skips are there, and add up to summary.skipped;
	// sched_process_exit's are summary.missed_exits.
	var skipped uint64
	progs := slices.DeleteFunc(loader.Programs(), func(p string) bool { return p == loader.ExitProgram })
	for _, prog := range progs {
		n, ok := r.SkippedByProgram[prog]
		if !ok {
			t.Fatalf("report: skipped_by_program lacks %s\n%s", prog, data)
		}
		skipped += n
	}
	if len(r.SkippedByProgram) != len(progs) || s.MissedExits == nil || skipped != *s.Skipped {
		t.Fatalf("report: skipped_by_program %v does not match the programs or summary.skipped %d", r.SkippedByProgram, *s.Skipped)
	}
	return r
}

// started is an sfwatch process that a test signals itself.
type started struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
}

// startSfwatch starts sfwatch with args (and the workload environment)
// without waiting for it.
func startSfwatch(t *testing.T, args ...string) *started {
	t.Helper()
	s := &started{cmd: exec.Command(sfwatchBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	s.cmd.Env = append(os.Environ(), workloadEnv()...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	s.cmd.WaitDelay = waitDelay
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	return s
}

// wait waits for the process (at most a minute) and checks that it left
// nothing behind.
func (s *started) wait(t *testing.T) result {
	t.Helper()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-done
		t.Fatalf("sfwatch did not exit within a minute; stderr:\n%s", s.stderr.String())
	}
	r := result{stdout: s.stdout.String(), stderr: s.stderr.String(), code: s.cmd.ProcessState.ExitCode(), pid: s.cmd.Process.Pid}
	assertNothingLeft(t, r.pid)
	return r
}

// waitForFile waits until path exists and returns its content.
func waitForFile(t *testing.T, path string, s *started) []byte {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if data, err := os.ReadFile(path); err == nil {
			return data
		}
	}
	t.Fatalf("%s never appeared; sfwatch stderr:\n%s", path, s.stderr.String())
	return nil
}

// fetch GETs url on a fresh connection and returns the body.
func fetch(t *testing.T, url string) []byte {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer is a bytes.Buffer that a test may read while a process
// writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// numbers are the counts without the by-errno map, to compare with ==.
func (m manifestCounts) numbers() [8]uint64 {
	return [8]uint64{m.calls, m.bytes, m.errors, m.short, m.eof, m.empty, m.offsetNull, m.offsetPtr}
}

// slow stretches a bound on how long a workload takes by
// $SFWATCH_TEST_SLOWDOWN (an integer factor): a kernel booted under qemu
// without KVM (scripts/kernels) runs the same calls several times slower.
func slow(d time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv("SFWATCH_TEST_SLOWDOWN")); err == nil && n > 1 {
		return d * time.Duration(n)
	}
	return d
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

// groupPattern globs the groups that sfwatch process pid creates.
func groupPattern(t *testing.T, pid int) string {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(mount, fmt.Sprintf("sfwatch-%d-*", pid))
}

func readFileString(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// sfwatchForNobody copies the sfwatch binary into a directory that nobody
// (uid 65534) can reach and run it from.
func sfwatchForNobody(t *testing.T) (bin, dir string) {
	t.Helper()
	return copyForNobody(t, sfwatchBin, "sfwatch")
}

// copyForNobody copies the binary src, as name, into a new directory that
// nobody (uid 65534) can reach and run it from.
func copyForNobody(t *testing.T, src, name string) (bin, dir string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sfwatch-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, name)
	data, err := os.ReadFile(src)
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

// runAsNobody runs bin (from sfwatchForNobody) with args as uid 65534,
// with the ambient capabilities caps, and checks it left nothing behind.
func runAsNobody(t *testing.T, bin, dir string, caps []uintptr, args ...string) result {
	t.Helper()
	return runAsNobodyEnv(t, bin, dir, nil, caps, args...)
}

// runAsNobodyEnv is runAsNobody with env added to the test's environment.
func runAsNobodyEnv(t *testing.T, bin, dir string, env []string, caps []uintptr, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd, err := startRetryingBusy(func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.WaitDelay = waitDelay
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
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
