package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/session"
)

// selftestChildCommand is the hidden command that runs the workload.
const selftestChildCommand = "__selftest-child"

// selftestFileSize is the file that net/http serves; several sendfile calls
// may carry it, their NULL-offset bytes must add up to exactly this.
const selftestFileSize = 256 << 10

// directCall is a call the workload made itself and reports on stdout, so
// that the parent can find the kernel's event for each one.
type directCall struct {
	Tid          uint32 `json:"tid"`
	OutFD        int32  `json:"out_fd"`
	InFD         int32  `json:"in_fd"`
	OffsetBefore int64  `json:"offset_before"`
	OffsetAfter  int64  `json:"offset_after"`
	Count        uint64 `json:"count"`
	Ret          int64  `json:"ret"`
	Null         bool   `json:"null"` // offset argument was NULL
}

const selftestUsage = `Usage: sfwatch selftest [flags]

Runs a known workload (net/http serving a file, pointer offsets, EOF, a short
call, EBADF, EINVAL) under sfwatch and checks every call against what the
workload says it did. Exit 0: PASS; 1: FAIL; 125: sfwatch could not run.

Flags:
` + viaUsage

func selftestCommand(ctx context.Context, args []string) error {
	var via viaFlags
	fs := flag.NewFlagSet("selftest", flag.ContinueOnError)
	via.register(fs)
	if err := parse(fs, args, selftestUsage); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("selftest takes no arguments but flags, got %q; see 'sfwatch selftest --help'", fs.Arg(0))
	}
	if err := via.check("selftest"); err != nil {
		return err
	}
	through, err := via.connect("selftest", true)
	if err != nil {
		return err
	}
	if through != nil {
		defer through.Close()
		fmt.Fprintf(os.Stderr, "sfwatch selftest: through the daemon at %s\n", through.Socket())
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	var manifest bytes.Buffer
	cmd := exec.Command(self, selftestChildCommand)
	cmd.Stdout = &manifest
	cmd.Stderr = os.Stderr
	sink := &collectSink{print: newStreamSink(os.Stderr, "text", events.TextOptions{})}
	o, err := session.Run(ctx, cmd, session.Config{Sink: sink, Daemon: through})
	if err != nil {
		return err
	}
	sink.print.Close()
	fmt.Fprintln(os.Stderr, events.AccountingLine(o.Summary))

	problems := checkSelftest(o, sink.events, manifest.Bytes())
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "sfwatch selftest: "+p)
	}
	if len(problems) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("selftest FAIL: %d problem(s)", len(problems))}
	}
	fmt.Fprintf(os.Stderr, "sfwatch selftest: PASS: %d calls seen and validated (net/http serving %d bytes, pointer offsets, EOF, short, EBADF, EINVAL)\n",
		o.Summary.Calls, selftestFileSize)
	return nil
}

// collectSink prints each event and keeps a copy.
type collectSink struct {
	print  *streamSink
	events []events.Event
}

func (c *collectSink) Event(e *events.Event, v events.Verdict) {
	c.print.Event(e, v)
	c.events = append(c.events, *e)
}

func (c *collectSink) Idle() { c.print.Idle() }

// checkSelftest lists everything that is not as the workload says it did.
func checkSelftest(o session.Outcome, seen []events.Event, manifest []byte) []string {
	var problems []string
	if o.ExitCode != 0 {
		problems = append(problems, fmt.Sprintf("workload exited %d", o.ExitCode))
	}
	s := o.Summary
	if s.Lost != 0 || s.Events != s.Calls {
		problems = append(problems, fmt.Sprintf("kernel counted %d calls, %d events delivered, %d lost", s.Calls, s.Events, s.Lost))
	}
	if s.Violations != 0 {
		problems = append(problems, fmt.Sprintf("%d contract violations", s.Violations))
	}
	var nullBytes int64
	matched := make([]bool, len(seen))
	for i := range seen {
		if e := &seen[i]; e.OffsetNull() && e.Ret > 0 {
			nullBytes += e.Ret
			matched[i] = true
		}
	}
	// net/http writes the first 512 bytes itself (response.ReadFrom copies
	// sniffLen bytes before switching to sendfile), the rest with sendfile.
	if want := int64(selftestFileSize - 512); nullBytes != want {
		problems = append(problems, fmt.Sprintf("net/http sent %d bytes with NULL-offset sendfile, want %d", nullBytes, want))
	}
	sc := bufio.NewScanner(bytes.NewReader(manifest))
	calls := 0
	for sc.Scan() {
		var c directCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			problems = append(problems, fmt.Sprintf("reading workload manifest: %v", err))
			break
		}
		calls++
		if !findCall(c, seen, matched) {
			problems = append(problems, fmt.Sprintf("no event for the workload's call %+v", c))
		}
	}
	if calls == 0 {
		problems = append(problems, "the workload reported no direct calls")
	}
	return problems
}

func findCall(c directCall, seen []events.Event, matched []bool) bool {
	for i := range seen {
		e := &seen[i]
		if matched[i] || e.OffsetNull() != c.Null || e.Tid != c.Tid || e.OutFd != c.OutFD || e.InFd != c.InFD || e.Count != c.Count || e.Ret != c.Ret {
			continue
		}
		if !c.Null && c.Ret >= 0 && (e.OffsetBefore != c.OffsetBefore || e.OffsetAfter != c.OffsetAfter) {
			continue
		}
		matched[i] = true
		return true
	}
	return false
}

// selftestChild is the workload: it serves a file with net/http and
// fetches it (sendfile with a NULL offset, inside Go's net/http), then makes
// direct calls with pointer offsets and failing calls, and prints a
// manifest of those on stdout.
func selftestChild(args []string) error {
	dir, err := os.MkdirTemp("", "sfwatch-selftest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "payload.txt") // a known type: net/http sends it all with sendfile, no sniffing write
	payload := bytes.Repeat([]byte("sfwatch selftest payload\n"), selftestFileSize/25+1)[:selftestFileSize]
	if err := os.WriteFile(path, payload, 0o644); err != nil {
		return err
	}
	if err := serveAndFetch(dir, payload); err != nil {
		return fmt.Errorf("net/http workload: %w", err)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devNull.Close()
	appendOut, err := os.OpenFile(filepath.Join(dir, "append"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer appendOut.Close()

	enc := json.NewEncoder(os.Stdout)
	out, src := int(devNull.Fd()), int(in.Fd())
	for _, step := range []struct {
		out, in int
		offset  int64
		count   uint64
	}{
		{out, src, 0, 4096},                      // a full transfer: [0] => [4096]
		{out, src, 1 << 10, 8192},                // from the middle
		{out, src, selftestFileSize - 100, 4096}, // short: 100 bytes left
		{out, src, selftestFileSize, 4096},       // EOF: 0, offset unchanged
		{1000, src, 0, 4096},                     // EBADF: fd 1000 is not open
		{int(appendOut.Fd()), src, 0, 4096},      // EINVAL: output opened O_APPEND
	} {
		offset := step.offset
		if err := enc.Encode(sendfileCall(step.out, step.in, &offset, step.count)); err != nil {
			return err
		}
	}
	return nil
}

// sendfileCall makes one raw sendfile call from the current thread (the
// caller locks it) and describes it. A nil offset passes NULL.
func sendfileCall(out, in int, offset *int64, count uint64) directCall {
	c := directCall{Tid: uint32(unix.Gettid()), OutFD: int32(out), InFD: int32(in), Count: count, Null: offset == nil}
	if offset != nil {
		c.OffsetBefore = *offset
	}
	r, _, errno := unix.Syscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(offset)), uintptr(count), 0, 0)
	c.Ret = int64(r)
	if errno != 0 {
		c.Ret = -int64(errno)
	}
	if offset != nil {
		c.OffsetAfter = *offset
	}
	return c
}

func serveAndFetch(dir string, want []byte) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/payload.txt")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("fetched %d bytes, not the %d served", len(got), len(want))
	}
	return nil
}
