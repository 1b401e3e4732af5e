package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// The strace tests run this test binary again, under strace, as a helper
// that makes known sendfile calls and reports each one, as it saw it, on
// stdout. The events built from those reports must render exactly as strace
// printed the same calls.
const (
	helperEnv     = "SFWATCH_EVENTS_STRACE_HELPER" // "calls" or "one"
	helperFileEnv = "SFWATCH_EVENTS_STRACE_FILE"   // the file to send from
	helperFileLen = 10000
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := straceHelper(mode, os.Getenv(helperFileEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "strace helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperCall is one call as the helper made and saw it.
type helperCall struct {
	Tid               int
	Comm              string
	OutFD, InFD       int32
	Ptr               uint64
	Before, After     int64
	BeforeOK, AfterOK bool
	Count             uint64
	Ret               int64 // -errno on failure
}

// event is the Event the BPF program would report for c.
func (c helperCall) event() Event {
	var e Event
	e.Pid, e.Tid = uint32(os.Getpid()), uint32(c.Tid)
	setComm(&e, c.Comm)
	e.OutFd, e.InFd, e.Count, e.Ret = c.OutFD, c.InFD, c.Count, c.Ret
	e.OffsetPtr, e.OffsetBefore, e.OffsetAfter = c.Ptr, c.Before, c.After
	if c.BeforeOK {
		e.Flags |= uint32(loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK)
	}
	if c.AfterOK {
		e.Flags |= uint32(loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK)
	}
	return e
}

func straceHelper(mode, path string) error {
	// One thread makes every call, so strace reports one tid and never
	// interleaves "<unfinished ...>" lines.
	runtime.LockOSThread()
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	comm, err := os.ReadFile("/proc/thread-self/comm")
	if err != nil {
		return err
	}
	const closedFD = 99
	syscall.Close(closedFD) // make sure: EBADF is the point

	enc := json.NewEncoder(os.Stdout)
	file, null := int(in.Fd()), int(devNull.Fd())
	sendfile := func(out, in int, off *int64, badPtr uintptr, count uint64) error {
		c := helperCall{Tid: unix.Gettid(), Comm: strings.TrimSuffix(string(comm), "\n"),
			OutFD: int32(out), InFD: int32(in), Count: count}
		var (
			r     uintptr
			errno syscall.Errno
		)
		if off != nil {
			c.Before, c.BeforeOK = *off, true
			c.Ptr = uint64(uintptr(unsafe.Pointer(off)))
			r, _, errno = syscall.Syscall6(syscall.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(off)), uintptr(count), 0, 0)
			c.After, c.AfterOK = *off, true
		} else {
			c.Ptr = uint64(badPtr)
			r, _, errno = syscall.Syscall6(syscall.SYS_SENDFILE, uintptr(out), uintptr(in), badPtr, uintptr(count), 0, 0)
		}
		c.Ret = int64(r)
		if errno != 0 {
			c.Ret = -int64(errno)
		}
		return enc.Encode(c)
	}
	offset := func(v int64) *int64 { return &v }

	if mode == "one" { // the strace test injects the result
		return sendfile(null, file, nil, 0, 10)
	}
	for _, err := range []error{
		sendfile(null, file, nil, 0, 4096),                       // NULL offset
		sendfile(null, file, offset(0), 0, 4096),                 // [0] => [4096]
		sendfile(null, file, offset(helperFileLen-100), 0, 4096), // short
		sendfile(null, file, offset(helperFileLen), 0, 4096),     // at EOF: 0, no "=>"
		sendfile(null, file, nil, 0, 0),                          // count 0
		sendfile(closedFD, file, nil, 0, 10),                     // EBADF
		sendfile(null, pipe[0], offset(0), 0, 10),                // ESPIPE: a pipe has no offset
		sendfile(null, pipe[0], nil, 0, 10),                      // EINVAL: a pipe cannot be mmapped
		sendfile(null, file, offset(-5), 0, 10),                  // EINVAL, offset printed unsigned
		sendfile(null, file, nil, 8, 10),                         // EFAULT, the pointer in hex
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// runUnderStrace runs the helper in mode under strace with extra options and
// returns the calls it reported and strace's lines, one per call.
func runUnderStrace(t *testing.T, mode string, straceArgs ...string) ([]helperCall, []string) {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed: cannot compare with it")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(data, bytes.Repeat([]byte{'x'}, helperFileLen), 0o600); err != nil {
		t.Fatal(err)
	}
	// strace's output stays on stderr, in its "[pid  1234] " form; the
	// helper writes nothing there unless it fails.
	args := []string{"-f", "-qq", "-T", "-e", "trace=sendfile", "-e", "signal=none"}
	args = append(append(args, straceArgs...), "--", os.Args[0])
	cmd := exec.Command(strace, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperFileEnv+"="+data)
	var trace bytes.Buffer
	cmd.Stderr = &trace
	stdout, err := cmd.Output()
	if err != nil {
		if strings.Contains(trace.String(), "ptrace") {
			t.Skipf("strace cannot trace here: %v: %s", err, trace.Bytes())
		}
		t.Fatalf("strace %s: %v\n%s", strings.Join(args, " "), err, trace.Bytes())
	}

	var calls []helperCall
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var c helperCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("helper report %q: %v", sc.Bytes(), err)
		}
		calls = append(calls, c)
	}
	// Only the calls: strace may add its own notes about the helper's other
	// threads as they exit.
	var lines []string
	for line := range strings.Lines(trace.String()) {
		if strings.Contains(line, "sendfile(") {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}
	if len(lines) != len(calls) {
		t.Fatalf("strace printed %d lines for the helper's %d calls:\n%s", len(lines), len(calls), trace.Bytes())
	}
	return calls, lines
}

var (
	straceDuration = regexp.MustCompile(` <(\d+)\.(\d{6})>$`)
	stracePrefix   = regexp.MustCompile(`^\[pid +\d+\] `)
	commInPrefix   = regexp.MustCompile(`^(\[pid +\d+)<[^>]*>\] `)
)

// compareWithStrace renders c as AppendText does and compares it with
// strace -f's line, spaces included. The duration is strace's own (the only
// thing read from its line). strace prints "[pid N] " only while it traces
// more than one task: sfwatch's PrefixPid line must then be strace's, and
// its default line strace's with "<comm>" added; PrefixNone's, otherwise.
func compareWithStrace(t *testing.T, c helperCall, line string) {
	t.Helper()
	line = strings.Replace(line, " (INJECTED)", "", 1) // strace's note on injected results
	e := c.event()
	if m := straceDuration.FindStringSubmatch(line); m != nil {
		s, _ := strconv.ParseUint(m[1], 10, 64)
		us, _ := strconv.ParseUint(m[2], 10, 64)
		e.DurationNs = s*1e9 + us*1e3
	}
	render := func(p Prefix) string {
		// Verdict{}: the violation marker is sfwatch's own, not strace's.
		return strings.TrimSuffix(string(AppendText(nil, &e, Verdict{}, TextOptions{Durations: true, Prefix: p})), "\n")
	}
	if !stracePrefix.MatchString(line) {
		if got := render(PrefixNone); got != line {
			t.Errorf("sfwatch %q\nstrace  %q", got, line)
		}
		return
	}
	if got := render(PrefixPid); got != line {
		t.Errorf("sfwatch %q\nstrace  %q", got, line)
	}
	if got := commInPrefix.ReplaceAllString(render(PrefixComm), "$1] "); got != line {
		t.Errorf("sfwatch, <comm> taken out, %q\nstrace  %q", got, line)
	}
}

func TestStraceCompatibility(t *testing.T) {
	calls, lines := runUnderStrace(t, "calls")
	for i, c := range calls {
		compareWithStrace(t, c, lines[i])
	}
	t.Logf("strace printed, and sfwatch rendered identically:\n%s", strings.Join(lines, "\n"))
}

// TestErrnoTableMatchesStrace makes strace inject every errno of the table,
// and some it cannot name, and compares the texts.
func TestErrnoTableMatchesStrace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs strace once per errno")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed: cannot compare with it")
	}
	errnos := []syscall.Errno{41, 58, 519, 531, 4095} // unnamed
	for e, text := range errnoTable {
		if text.name != "" {
			errnos = append(errnos, syscall.Errno(e))
		}
	}
	for _, errno := range errnos {
		t.Run(fmt.Sprint(int(errno)), func(t *testing.T) {
			t.Parallel() // each run waits on a process under ptrace
			calls, lines := runUnderStrace(t, "one", "-e", fmt.Sprintf("inject=sendfile:error=%d:when=1", errno))
			if calls[0].Ret != -int64(errno) {
				t.Fatalf("helper saw ret %d, want -%d", calls[0].Ret, errno)
			}
			compareWithStrace(t, calls[0], lines[0])
		})
	}
}

// The names agree with x/sys/unix, except where strace differs from it.
func TestErrnoTableNames(t *testing.T) {
	// Same numbers, other aliases in x/sys: ENOTSUP, EFSCORRUPTED.
	straceSays := map[syscall.Errno]string{unix.EOPNOTSUPP: "EOPNOTSUPP", unix.EUCLEAN: "EUCLEAN"}
	for e, text := range errnoTable {
		errno := syscall.Errno(e)
		want := unix.ErrnoName(errno)
		if s, ok := straceSays[errno]; ok {
			want = s
		}
		if text.name == "" || want == "" {
			continue // nothing to cross-check
		}
		if text.name != want {
			t.Errorf("errno %d: table says %q, x/sys/unix %q", e, text.name, want)
		}
	}
	for _, tc := range []struct {
		errno syscall.Errno
		want  string
	}{{syscall.EBADF, "EBADF"}, {512, "ERESTARTSYS"}, {41, "errno 41"}, {1234, "errno 1234"}, {1 << 20, "errno 1048576"}} {
		if got := ErrnoName(tc.errno); got != tc.want {
			t.Errorf("ErrnoName(%d) = %q, want %q", tc.errno, got, tc.want)
		}
	}
}
