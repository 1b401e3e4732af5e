package main

// sfwatch as strace: invoked under the name strace, or as `sfwatch strace
// ARGS`, it takes strace's command line for what it can honour, so that a
// test or script that runs `strace -f -q CMD` and reads the sendfile lines
// works without ptrace.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/session"
)

// straceCommand is the name of the subcommand, and the program name under
// which sfwatch behaves as strace.
const straceCommand = "strace"

// straceExitUsage is strace's status on bad usage, and on any failure of
// its own.
const straceExitUsage = 1

const straceHelp = `Usage: strace [-fqTtcC] [-o FILE] [-e trace=sendfile] [-u USER] [-a COLUMN] [-s N] -- CMD [ARGS...]
       strace [-fqTtcC] [-o FILE] [-e trace=sendfile] -p PID

sfwatch as strace: shows the sendfile calls of CMD (or of process PID) in
strace's format, seen with eBPF, without ptrace. No other system call is
traced. Options, as strace's: -f follow threads and children (-ff -o FILE:
one file a thread, FILE.TID), -q -qq -qqq, -o FILE, -e trace=sendfile
(also sendfile64, t=, -e sendfile), -T, -t -tt -ttt, -c (table only),
-C (lines and table), -u USER, -a COLUMN, -s N (no strings to print), -p PID,
-h, -V. Anything else is refused with status 1.
`

// straceOptions are the strace options that sfwatch honours.
type straceOptions struct {
	follow     int    // -f: 1, -ff: 2
	quiet      int    // -q: 1, -qq: 2, -qqq: 3
	output     string // -o FILE
	traceSet   bool   // -e trace= named sendfile
	durations  bool   // -T
	timestamps int    // -t: 1, -tt: 2, -ttt: 3
	summary    byte   // 'c': the table only; 'C': the lines and the table
	user       string // -u USER
	column     int    // -a COLUMN
	pid        int    // -p PID
	help       bool   // -h
	version    bool   // -V
	argv       []string
}

// straceUsageError is bad usage, said in one line, as strace says it.
type straceUsageError string

func (e straceUsageError) Error() string { return string(e) }

func straceUsagef(format string, args ...any) error {
	return straceUsageError(fmt.Sprintf(format, args...))
}

// straceArgOptions take an argument; straceFlagOptions do not. Together
// they are strace 6.1's short options (its getopt string), so that an
// option strace knows but sfwatch cannot honour is named as such, and one
// strace does not know is refused as strace refuses it.
const (
	straceArgOptions  = "abeEIoOpPsSuUX"
	straceFlagOptions = "AcCdDfFhiknqrtTvVwxyYzZ"
)

// parseStraceArgs reads args as strace's getopt does ("+" mode: options
// stop at the first operand or "--"; short options combine, "-fq"; an
// argument follows its letter or comes next, "-oFILE" or "-o FILE").
func parseStraceArgs(args []string) (*straceOptions, error) {
	o := &straceOptions{column: 40}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		if strings.HasPrefix(arg, "--") {
			name, _, _ := strings.Cut(arg, "=")
			return nil, straceUsagef("option '%s' is not one sfwatch honours as strace; see strace -h", name)
		}
		for j := 1; j < len(arg); j++ {
			c := arg[j]
			if strings.IndexByte(straceArgOptions, c) >= 0 {
				value := arg[j+1:]
				if value == "" {
					if i+1 >= len(args) {
						return nil, straceUsagef("option requires an argument -- '%c'", c)
					}
					i++
					value = args[i]
				}
				if err := o.setArg(c, value); err != nil {
					return nil, err
				}
				break
			}
			if strings.IndexByte(straceFlagOptions, c) < 0 {
				return nil, straceUsagef("invalid option -- '%c'", c)
			}
			if err := o.setFlag(c); err != nil {
				return nil, err
			}
		}
	}
	o.argv = args[i:]
	if o.help || o.version {
		return o, nil
	}
	switch {
	case len(o.argv) == 0 && o.pid == 0:
		return nil, straceUsagef("must have PROG [ARGS] or -p PID")
	case len(o.argv) > 0 && o.pid != 0:
		return nil, straceUsagef("-p PID and PROG both given: sfwatch traces one or the other")
	case o.follow > 1 && o.output != "" && o.summary == 'c':
		return nil, straceUsagef("-ff -o FILE with -c: sfwatch writes the -c table to one file only; drop -ff or -c")
	}
	return o, nil
}

func (o *straceOptions) setFlag(c byte) error {
	switch c {
	case 'f':
		o.follow++
	case 'q':
		o.quiet = min(o.quiet+1, 3)
	case 'T':
		o.durations = true
	case 't':
		o.timestamps = min(o.timestamps+1, 3)
	case 'c':
		if o.summary == 0 {
			o.summary = 'c'
		}
	case 'C':
		o.summary = 'C'
	case 'h':
		o.help = true
	case 'V':
		o.version = true
	default:
		return straceUsagef("-%c: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)", c)
	}
	return nil
}

func (o *straceOptions) setArg(c byte, value string) error {
	switch c {
	case 'o':
		if strings.HasPrefix(value, "|") || strings.HasPrefix(value, "!") {
			return straceUsagef("-o %s: sfwatch writes to files only, not to a command", value)
		}
		o.output = value
	case 'e':
		return o.qualify(value)
	case 'u':
		o.user = value
	case 'a':
		n, err := strconv.ParseUint(value, 10, 31)
		if err != nil {
			return straceUsagef("invalid -a argument: '%s'", value)
		}
		// -a0: no padding; sfwatch's 0 means the default, 1 pads nothing
		// (a call's text is always longer).
		o.column = max(int(n), 1)
	case 's':
		// strace's string length: sendfile has no string to print.
		if _, err := strconv.ParseUint(value, 10, 31); err != nil {
			return straceUsagef("invalid -s argument: '%s'", value)
		}
	case 'p':
		n, err := strconv.ParseUint(value, 10, 31)
		if err != nil || n == 0 {
			return straceUsagef("invalid process id: '%s'", value)
		}
		if o.pid != 0 && o.pid != int(n) {
			return straceUsagef("-p %s: sfwatch follows one process (-p %d given already)", value, o.pid)
		}
		o.pid = int(n)
	default:
		return straceUsagef("-%c: sfwatch cannot honour this strace option (it sees sendfile calls only, through eBPF)", c)
	}
	return nil
}

// qualify reads one -e expression: [QUALIFIER=]VALUE[,VALUE...], where a
// bare one is trace=. Honoured: trace= (t=) with sendfile or sendfile64,
// each possibly after strace's "?" (no error if unknown); signal=none (no
// signal is ever shown) and quiet= (none of strace's messages is shown
// but the ones -q controls).
func (o *straceOptions) qualify(expr string) error {
	name, value, ok := strings.Cut(expr, "=")
	if !ok {
		name, value = "trace", expr
	}
	switch name {
	case "trace", "t":
		if value == "" {
			return straceUsagef("-e %s: empty system call list", expr)
		}
		for v := range strings.SplitSeq(value, ",") {
			switch strings.TrimPrefix(v, "?") {
			case "sendfile", "sendfile64":
			default:
				return straceUsagef("-e %s: sfwatch traces sendfile and sendfile64 only, not '%s'", expr, v)
			}
		}
		o.traceSet = true
	case "signal", "signals", "s":
		if value != "none" {
			return straceUsagef("-e %s: sfwatch shows no signals; only signal=none is honoured", expr)
		}
	case "quiet", "silent", "silence", "q":
	default:
		return straceUsagef("-e %s: sfwatch cannot honour this strace qualifier (it sees sendfile calls only)", expr)
	}
	return nil
}

// textOptions are the renderer's options: strace's prefix for the way it
// was called (no -f: none; -f: "[pid N] ", or "N " with -o; -ff -o: none,
// one file a thread) and its -a column.
func (o *straceOptions) textOptions() events.TextOptions {
	t := events.TextOptions{Durations: o.durations, Column: o.column, Prefix: events.PrefixNone}
	switch {
	case o.follow == 0 || (o.follow > 1 && o.output != ""):
	case o.output != "":
		t.Prefix = events.PrefixFile
	default:
		t.Prefix = events.PrefixPid
	}
	if o.timestamps > 0 {
		t.Timestamps = events.NoTimestamps + events.Timestamps(o.timestamps)
		t.WallOffsetNs = events.WallOffset()
	}
	return t
}

// straceMain runs sfwatch as strace. Every failure is strace's: one line
// "strace: ...", status 1.
func straceMain(ctx context.Context, args []string) error {
	// First: the descriptors the caller handed down to the traced
	// command (Go's exec.Cmd.ExtraFiles: a listener, say), before sfwatch
	// opens any of its own.
	inherited := inheritedFiles()
	err := straceRun(ctx, args, inherited)
	var ee *exitError
	if err == nil || errors.As(err, &ee) && ee.err == nil {
		return err
	}
	stderr.bound()
	fmt.Fprintf(stderr, "%s: %v\n", straceCommand, err)
	return &exitError{code: straceExitUsage}
}

func straceRun(ctx context.Context, args []string, inherited []*os.File) error {
	// Held until the child runs, as in run; SIGPIPE caught as in watch.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	held := make(chan os.Signal, 16)
	signal.Notify(held, forwardedSignals...)
	defer signal.Stop(held)

	o, err := parseStraceArgs(args)
	if err != nil {
		return err
	}
	switch {
	case o.help:
		fmt.Print(straceHelp)
		return nil
	case o.version:
		fmt.Printf("%s (sfwatch as strace)\n", versionString())
		return nil
	}
	// Through the daemon when one answers on $SFWATCH_SOCKET (or the
	// default socket): then as any user, as strace. -p attaches with
	// sfwatch's own programs.
	via := viaFlags{standalone: o.pid != 0}
	through, err := via.connect("sfwatch", true)
	if err != nil {
		return err
	}
	if through != nil {
		defer through.Close()
	}
	if !o.traceSet && o.quiet < 2 {
		fmt.Fprintf(stderr, "%s: sfwatch shows sendfile calls only: no other system call is traced (-e trace=sendfile says so, -qq silences this)\n", straceCommand)
	}
	var cmd *exec.Cmd
	if o.pid == 0 {
		cmd = exec.Command(o.argv[0], o.argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.ExtraFiles = inherited
		if err := child.Resolve(cmd); err != nil {
			return err
		}
		// strace runs CMD with its own credentials (child's default);
		// -u drops them.
		if err := child.CheckUser(o.user); err != nil {
			return err
		}
	}

	sink, err := newStraceSink(o)
	if err != nil {
		return err
	}
	cfg := session.Config{RingBufSize: loader.DefaultRingBufSize, SampleEvery: 1, Sink: sink, LossNotice: stderr}
	cfg.Finishing = func() {
		stderr.bound()
		sink.bound()
	}

	var outcome session.Outcome
	if o.pid != 0 {
		outcome, err = straceAttach(ctx, o, cfg)
	} else {
		// Only CMD's own thread without -f, as strace without -f.
		if o.follow == 0 {
			sink.childOnly = make(chan struct{})
			cfg.ChildStarted = func(pid int) {
				sink.onlyTid = uint32(pid)
				close(sink.childOnly)
			}
		}
		outcome, err = runChild(ctx, cmd, o.user, held, through)(cfg)
	}
	if err != nil {
		sink.close()
		return err
	}
	if err := sink.finish(); err != nil {
		return err
	}
	if s := outcome.Summary; s.Lost != 0 {
		fmt.Fprintf(stderr, "%s: sfwatch lost %d events (the ring buffer was full): their calls are not shown\n", straceCommand, s.Lost)
	}
	if err := stderr.gaveUp(); err != nil {
		return err
	}
	if o.pid != 0 {
		return nil
	}
	// Killed by a signal: strace dies of the same signal.
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		signal.Reset(ws.Signal())
		syscall.Kill(os.Getpid(), ws.Signal())
	}
	return &exitError{code: outcome.ExitCode}
}

// straceAttach watches process o.pid, its threads only with -f and its
// main thread only without, as strace -p does, until SIGINT, SIGTERM,
// SIGHUP or SIGQUIT or until it exits. sfwatch watches a cgroup: it
// watches the process's group and keeps only the process's events.
func straceAttach(ctx context.Context, o *straceOptions, cfg session.Config) (session.Outcome, error) {
	pidfd, err := unix.PidfdOpen(o.pid, 0)
	if err != nil {
		return session.Outcome{}, fmt.Errorf("attach: pid %d: %w", o.pid, err)
	}
	defer unix.Close(pidfd)
	group, err := cgroup.OfPID(o.pid)
	if err != nil {
		return session.Outcome{}, err
	}
	defer group.Close()
	sink := cfg.Sink.(*straceSink)
	if o.follow == 0 {
		sink.onlyTid = uint32(o.pid)
	} else {
		sink.onlyTgid = uint32(o.pid)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := make(chan struct{})
	go func() {
		// The pidfd turns readable when the process exits.
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for ctx.Err() == nil {
			if n, _ := unix.Poll(fds, 200); n > 0 {
				close(exited)
				cancel()
				return
			}
		}
	}()
	started := cfg.Started
	cfg.Started = func() {
		if started != nil {
			started()
		}
		if o.quiet == 0 {
			fmt.Fprintf(stderr, "%s: Process %d attached\n", straceCommand, o.pid)
		}
	}
	out, err := session.Attach(ctx, group, cfg)
	select {
	case <-exited:
	default:
		if o.quiet == 0 && err == nil {
			fmt.Fprintf(stderr, "%s: Process %d detached\n", straceCommand, o.pid)
		}
	}
	return out, err
}

// inheritedFiles returns the descriptors above stderr that sfwatch was
// given open across exec, at their numbers (nil for a gap), for the child's
// ExtraFiles; they are made close-on-exec here, so that only the child,
// not the watchdog, gets them.
func inheritedFiles() []*os.File {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // ours (the directory being read), or not meant to be passed on
		}
		fds = append(fds, fd)
	}
	if len(fds) == 0 {
		return nil
	}
	slices.Sort(fds) // the directory lists "10" before "3"
	files := make([]*os.File, fds[len(fds)-1]-2)
	for _, fd := range fds {
		unix.CloseOnExec(fd)
		files[fd-3] = os.NewFile(uintptr(fd), "fd "+strconv.Itoa(fd))
	}
	return files
}

// straceSink writes strace's lines for the events it keeps, to one output
// or, with -ff -o FILE, to FILE.TID, and counts them for -c.
type straceSink struct {
	o        *straceOptions
	text     events.Text
	line     []byte
	out      *bufio.Writer
	bounded  *boundedWriter
	file     *os.File            // -o FILE
	perTid   map[uint32]*os.File // -ff -o FILE
	onlyTid  uint32              // not 0: this thread's events only
	onlyTgid uint32              // not 0: this process's events only
	// childOnly, when set, is closed once onlyTid holds the child's pid:
	// events can come before run knows it.
	childOnly chan struct{}
	err       error

	calls, errors uint64
	durationNs    uint64
}

func newStraceSink(o *straceOptions) (*straceSink, error) {
	s := &straceSink{o: o, line: make([]byte, 0, 512), bounded: stderr}
	s.text.Options = o.textOptions()
	switch {
	case o.output != "" && o.follow > 1:
		s.perTid = make(map[uint32]*os.File)
	case o.output != "":
		f, err := os.Create(o.output)
		if err != nil {
			return nil, fmt.Errorf("can't fopen '%s': %w", o.output, err)
		}
		s.file = f
		s.bounded = newBoundedWriter(f, "-o "+o.output)
	}
	s.out = bufio.NewWriterSize(s.bounded, 64<<10)
	return s, nil
}

func (s *straceSink) Event(e *events.Event, v events.Verdict) {
	if s.childOnly != nil {
		<-s.childOnly // the child runs: it is a matter of microseconds
	}
	if s.onlyTid != 0 && e.Tid != s.onlyTid || s.onlyTgid != 0 && e.Pid != s.onlyTgid {
		return
	}
	s.calls++
	if e.Errno() != 0 {
		s.errors++
	}
	s.durationNs += e.DurationNs
	if s.o.summary == 'c' || s.err != nil {
		return
	}
	// strace's own text: the violation marker is sfwatch's.
	s.line = s.text.Append(s.line[:0], e, events.Verdict{Class: v.Class})
	if s.perTid != nil {
		s.err = s.writeTid(e.Tid, s.line)
		return
	}
	_, s.err = s.out.Write(s.line)
}

// writeTid appends line to FILE.TID, as strace -ff -o FILE writes each
// thread's lines; unbuffered, as the files are many.
func (s *straceSink) writeTid(tid uint32, line []byte) error {
	f := s.perTid[tid]
	if f == nil {
		var err error
		if f, err = os.Create(fmt.Sprintf("%s.%d", s.o.output, tid)); err != nil {
			return err
		}
		s.perTid[tid] = f
	}
	_, err := f.Write(line)
	return err
}

func (s *straceSink) Idle() {
	if s.err == nil {
		s.err = s.out.Flush()
	}
}

// bound gives up on an output that takes no data once the run is over.
func (s *straceSink) bound() { s.bounded.bound() }

// finish writes the -c table, flushes and closes.
func (s *straceSink) finish() error {
	if s.o.summary != 0 && s.err == nil {
		s.err = writeStraceTable(s.out, s.calls, s.errors, s.durationNs)
	}
	s.Idle()
	err := s.err
	if err2 := s.close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("writing the trace: %w", err)
	}
	return nil
}

func (s *straceSink) close() error {
	var errs []error
	if s.file != nil && s.bounded.gaveUp() == nil {
		errs = append(errs, s.file.Close())
	}
	for _, f := range s.perTid {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// writeStraceTable writes strace -c's table for sendfile, the only call
// sfwatch sees; the time is each call's, entry to exit.
func writeStraceTable(w io.Writer, calls, errs, durationNs uint64) error {
	if calls == 0 {
		return nil // strace prints no table without a call
	}
	const rule = "------ ----------- ----------- --------- --------- ----------------\n"
	us := durationNs / 1e3
	perCall := uint64(0)
	if calls != 0 {
		perCall = us / calls
	}
	errText := ""
	if errs != 0 {
		errText = strconv.FormatUint(errs, 10)
	}
	percent := 0.0
	if us != 0 {
		percent = 100
	}
	row := func(percent float64, name string) string {
		return fmt.Sprintf("%6.2f %4d.%06d %11d %9d %9s %s\n", percent, us/1e6, us%1e6, perCall, calls, errText, name)
	}
	_, err := io.WriteString(w, "% time     seconds  usecs/call     calls    errors syscall\n"+rule+
		row(percent, "sendfile")+rule+row(100, "total"))
	return err
}

// isStraceName reports whether sfwatch was invoked under strace's name.
func isStraceName(argv0 string) bool { return filepath.Base(argv0) == straceCommand }
