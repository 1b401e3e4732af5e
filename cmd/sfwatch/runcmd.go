package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/protocol"
	"github.com/sfwatch/sfwatch/internal/report"
	"github.com/sfwatch/sfwatch/internal/session"
)

const watchFlagsUsage = `  -o FILE              write events (and the -c table, but for --format json) to FILE instead of stderr
  --format text|json   text: strace-compatible lines (default); json: JSON Lines
  -T                   append each call's duration, as strace -T does
  -t, -tt, -ttt        start each line with the call's time, as strace does:
                       15:04:05, 15:04:05.000000, or seconds since the epoch;
                       with --format json, add time_unix_ns (wall clock, ns)
  -c, --summary        print a summary table at the end, like strace -c
  --quiet              no per-event output (totals, expectations and metrics only)
  --sample N           the kernel emits one event per N calls (counted per CPU);
                       totals and metrics stay exact
  --expect EXPR        check KEY OP N at the end, e.g. calls>=1, offset_ptr==0, errors==0;
                       KEY: calls bytes errors short eof empty offset_null offset_ptr violations lost
                       escaped;
                       OP: == != >= <= > <. Repeatable.
  --report FILE        write a JSON report (summary, errors, expectations, exit code)
  --junit FILE         write a JUnit XML file, one test case per --expect
  --metrics            serve Prometheus metrics on 127.0.0.1:9464/metrics
  --metrics-addr ADDR  serve them on ADDR instead (e.g. :9464 for every interface)
  --web-config FILE    TLS and basic auth for the metrics server (exporter-toolkit
                       format); a file that cannot be used is bad usage (exit 2)
  --ringbuf-size N     ring buffer bytes, a power of two up to 1073741824 (default 8388608)
` + viaUsage

const exitCodesUsage = `
Exit codes: the child's own status (128+N when killed by signal N);
2 bad usage, 3 an --expect failed, 4 an --expect was inconclusive,
125 sfwatch failed, 126 CMD not executable, 127 CMD not found.
`

const runUsage = `Usage: sfwatch run [flags] -- CMD [ARGS...]

Starts CMD in a new cgroup v2 group and prints every sendfile(2) call that it,
its threads and all its descendants make, strace-style, on stderr. When CMD
exits, whatever it left running in the group is killed.

Flags:
  --user NAME          run CMD as NAME (default: as sfwatch runs, root under sudo, as strace)
` + watchFlagsUsage + exitCodesUsage

const attachUsage = `Usage: sfwatch attach (--cgroup PATH | --pid PID) [flags]

Watches the sendfile(2) calls of an existing cgroup v2 group (a service, a
container) until SIGINT or SIGTERM. Nothing in the group is started or
signalled. PATH is absolute or relative to the cgroup2 mount; --pid watches
the group that process is in (not the root group: use --cgroup / for that).
When the group is removed, attach reports and exits 0.

Flags:
` + watchFlagsUsage + `
Exit codes: 0, 2 bad usage, 3 an --expect failed, 4 inconclusive, 125 sfwatch failed.
`

// watchFlags are the flags that run and attach share.
type watchFlags struct {
	output      string
	format      string
	durations   bool
	timestamps  [3]bool // -t, -tt, -ttt
	summary     bool
	quiet       bool
	sample      uint
	expects     []events.Expectation
	report      string
	junit       string
	metrics     bool
	metricsAddr string
	webConfig   string
	webWhat     string // what webConfig sets, from checkWebConfig
	ringBufSize int
	via         viaFlags
}

func (f *watchFlags) register(fs *flag.FlagSet) {
	f.via.register(fs)
	fs.StringVar(&f.output, "o", "", "")
	fs.StringVar(&f.format, "format", "text", "")
	fs.BoolVar(&f.durations, "T", false, "")
	fs.BoolVar(&f.timestamps[0], "t", false, "")
	fs.BoolVar(&f.timestamps[1], "tt", false, "")
	fs.BoolVar(&f.timestamps[2], "ttt", false, "")
	fs.BoolVar(&f.summary, "c", false, "")
	fs.BoolVar(&f.summary, "summary", false, "")
	fs.BoolVar(&f.quiet, "quiet", false, "")
	fs.UintVar(&f.sample, "sample", 1, "")
	fs.Var(expectList{&f.expects}, "expect", "")
	fs.StringVar(&f.report, "report", "", "")
	fs.StringVar(&f.junit, "junit", "", "")
	fs.BoolVar(&f.metrics, "metrics", false, "")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "")
	fs.StringVar(&f.webConfig, "web-config", "", "")
	fs.IntVar(&f.ringBufSize, "ringbuf-size", loader.DefaultRingBufSize, "")
}

func (f *watchFlags) check(command string) error {
	if err := f.via.check(command); err != nil {
		return err
	}
	if f.format != "text" && f.format != "json" {
		return usageError("%s: --format %q: want text or json", command, f.format)
	}
	if err := loader.ValidateRingBufSize(f.ringBufSize); err != nil {
		return usageError("%s: --ringbuf-size: %v", command, err)
	}
	if f.sample == 0 || f.sample > 1<<31 {
		return usageError("%s: --sample %d: want N >= 1 (one event per N calls)", command, f.sample)
	}
	// Files are written at the end: a place they cannot go would
	// otherwise fail the run only after the child has run.
	if err := checkOutputs(command, []outputFile{{"-o", f.output}, {"--report", f.report}, {"--junit", f.junit}}); err != nil {
		return err
	}
	if f.metricsAddr != "" {
		if err := checkListenAddr(f.metricsAddr); err != nil {
			return usageError("%s: --metrics-addr %s: %v; want HOST:PORT, e.g. 127.0.0.1:9464 or :9464", command, f.metricsAddr, err)
		}
	}
	if f.webConfig != "" && f.listenAddr() == "" {
		return usageError("%s: --web-config needs --metrics or --metrics-addr", command)
	}
	// A bad web config is bad usage, found before anything listens or
	// starts (exit 2), not a failure halfway through.
	if f.webConfig != "" {
		var err error
		if f.webWhat, err = checkWebConfig(f.webConfig); err != nil {
			return usageError("%s: --web-config %s: %v", command, f.webConfig, err)
		}
	}
	return nil
}

// textOptions are the text format's options; the most precise of -t, -tt
// and -ttt wins, as in strace.
func (f *watchFlags) textOptions() events.TextOptions {
	o := events.TextOptions{Durations: f.durations}
	for i, set := range f.timestamps {
		if set {
			o.Timestamps = events.Seconds + events.Timestamps(i)
		}
	}
	if o.Timestamps != events.NoTimestamps {
		o.WallOffsetNs = events.WallOffset()
	}
	return o
}

// listenAddr is where metrics are served, "" for nowhere. Only an
// explicit --metrics-addr listens beyond loopback.
func (f *watchFlags) listenAddr() string {
	if f.metricsAddr != "" {
		return f.metricsAddr
	}
	if f.metrics {
		return defaultMetricsAddr
	}
	return ""
}

// expectList collects repeated --expect flags, parsed as they come so that
// a malformed one is a usage error before anything starts.
type expectList struct{ list *[]events.Expectation }

func (e expectList) String() string { return "" }
func (e expectList) Set(s string) error {
	x, err := events.ParseExpectation(s)
	if err != nil {
		return err
	}
	*e.list = append(*e.list, x)
	return nil
}

// parse parses args with fs and turns every problem into a usage error.
func parse(fs *flag.FlagSet, args []string, help string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(help)
			return &exitError{code: 0}
		}
		return usageError("%s: %v; see 'sfwatch %s --help'", fs.Name(), err, fs.Name())
	}
	return nil
}

// watchdogCommand is the hidden command of the helper that removes the
// group of a run whose sfwatch was killed (cgroup.RunWatchdog).
const watchdogCommand = "__watchdog"

// forwardedSignals are the signals that child.Start forwards to the child
// (Spec.ForwardSignals).
var forwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP,
	syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
}

func runCommand(ctx context.Context, args []string) error {
	// child.Start forwards these signals from just before the child
	// exists until it has been waited for. One that came earlier, while
	// the group is created and the programs load, would kill sfwatch with
	// its group left behind, and never reach the child: it is held here
	// and sent to the child once it runs. One that comes after the child
	// has been waited for is ignored, so that sfwatch still reports.
	held := make(chan os.Signal, 16)
	signal.Notify(held, forwardedSignals...)
	defer signal.Stop(held)

	var f watchFlags
	var user string
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f.register(fs)
	fs.StringVar(&user, "user", "", "")
	if err := parse(fs, args, runUsage); err != nil {
		return err
	}
	if err := f.check("run"); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError("run: missing command; usage: sfwatch run [flags] -- CMD [ARGS...]")
	}
	through, err := f.via.connect("run", true)
	if err != nil {
		return err
	}
	if through != nil {
		defer through.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Before -o is created and the metrics port bound: a typo in CMD
	// leaves nothing behind but the reports CI asked for.
	if err := child.Resolve(cmd); err != nil {
		writeNotStartedReports(&f, argv, time.Now(), err)
		return err
	}
	if err := child.CheckUser(user); err != nil {
		return usageError("run: %v; give an existing user name or a numeric uid", err)
	}
	return watch(&f, argv, runChild(ctx, cmd, user, held, through))
}

// runChild starts cmd as user under tracing, through the daemon when
// through is set: the signals held since before the programs loaded go to
// the child once it runs.
func runChild(ctx context.Context, cmd *exec.Cmd, user string, held chan os.Signal, through *client.Client) func(session.Config) (session.Outcome, error) {
	return func(cfg session.Config) (session.Outcome, error) {
		cfg.User = user
		cfg.Daemon = through
		cfg.ForwardSignals = true
		// /proc/self/exe, not a path: it still runs if sfwatch's file was
		// replaced meanwhile.
		cfg.Watchdog = []string{"/proc/self/exe", watchdogCommand}
		// Started comes just before child.Start: what is held by then came
		// before the child's own forwarding began.
		var pending []os.Signal
		started := cfg.Started
		cfg.Started = func() {
			pending = drainSignals(held)
			if started != nil {
				started()
			}
		}
		childStarted := cfg.ChildStarted
		cfg.ChildStarted = func(pid int) {
			if childStarted != nil {
				childStarted(pid)
			}
			for _, sig := range pending {
				syscall.Kill(pid, sig.(syscall.Signal)) // not reaped yet: pid is the child's
			}
		}
		return session.Run(ctx, cmd, cfg)
	}
}

// drainSignals returns the signals waiting in c.
func drainSignals(c chan os.Signal) []os.Signal {
	var sigs []os.Signal
	for {
		select {
		case sig := <-c:
			sigs = append(sigs, sig)
		default:
			return sigs
		}
	}
}

func attachCommand(ctx context.Context, args []string) error {
	var f watchFlags
	var cgroupPath string
	var pid int
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	f.register(fs)
	fs.StringVar(&cgroupPath, "cgroup", "", "")
	fs.IntVar(&pid, "pid", 0, "")
	if err := parse(fs, args, attachUsage); err != nil {
		return err
	}
	if err := f.check("attach"); err != nil {
		return err
	}
	if (cgroupPath == "") == (pid == 0) {
		return usageError("attach: want exactly one of --cgroup PATH or --pid PID")
	}
	if fs.NArg() > 0 {
		return usageError("attach: unexpected argument %q; to start a command use 'sfwatch run -- CMD'", fs.Arg(0))
	}
	through, err := f.via.connect("attach", false)
	if err != nil {
		return err
	}
	if through != nil {
		defer through.Close()
	}
	var group *cgroup.Group
	if pid != 0 {
		group, err = cgroup.OfPID(pid)
	} else {
		group, err = cgroup.Open(cgroupPath)
	}
	if err != nil {
		return err
	}
	defer group.Close()
	if pid != 0 && group.Level == 0 {
		// pid 1, a kernel thread: its group holds every other one.
		return usageError("attach: pid %d is in the root cgroup, and watching it would watch the whole machine; to mean that, use --cgroup /", pid)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	target := []string{"attach", "--cgroup", group.Path}
	if pid != 0 {
		target = []string{"attach", "--pid", strconv.Itoa(pid)}
	}
	what := "cgroup " + group.Path
	if pid != 0 {
		what += fmt.Sprintf(" (the group of pid %d)", pid)
	}
	return watch(&f, target, func(cfg session.Config) (session.Outcome, error) {
		cfg.Started = func() {
			// The programs are attached: from here on every call is seen.
			fmt.Fprintf(stderr, "sfwatch: watching %s until SIGINT or SIGTERM\n", what)
		}
		cfg.Daemon = through
		out, err := session.Attach(ctx, group, cfg)
		if pe, ok := errors.AsType[*protocol.Err](err); ok && pe.Code == protocol.CodeOverlap && !f.via.daemon {
			// The daemon counts the group's calls elsewhere (a watched
			// subtree): sfwatch's own programs count them again.
			fmt.Fprintf(stderr, "%s: attaching with sfwatch's own programs\n", pe.Msg)
			if err := requirePrivileges("attach"); err != nil {
				return out, err
			}
			if err := loader.CheckKernel(); err != nil {
				return out, err
			}
			cfg.Daemon = nil
			out, err = session.Attach(ctx, group, cfg)
		}
		if out.GroupRemoved {
			fmt.Fprintf(stderr, "sfwatch: cgroup %s was removed: stopped watching\n", group.Path)
		}
		return out, err
	})
}

// watch sets up the sinks and the metrics server around one session, then
// reports its outcome.
func watch(f *watchFlags, target []string, start func(session.Config) (session.Outcome, error)) error {
	// Go's runtime would let a write to a closed stderr pipe (sfwatch run
	// ... 2>&1 | head) kill sfwatch with SIGPIPE, its group and child left
	// behind. Caught, it is an EPIPE instead: the stream stops, the run
	// goes on to its normal end. Caught, not ignored: an ignored signal
	// would stay ignored in the child. Never stopped: the last error line
	// is written after this returns.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	// The port first: a busy one fails before the output file is created.
	var srv *metricsServer
	if addr := f.listenAddr(); addr != "" {
		var err error
		if srv, err = startMetrics(addr, f.webConfig, f.webWhat); err != nil {
			return err
		}
		defer srv.Close()
	}
	out := stderr
	if f.output != "" {
		var closeOut func()
		var err error
		if out, closeOut, err = openBounded(f.output, "-o "+f.output); err != nil {
			return err
		}
		defer closeOut()
	}
	cfg := session.Config{RingBufSize: f.ringBufSize, SampleEvery: uint32(f.sample)}
	// The run is over: an output that takes no data now is given up
	// on, so that sfwatch still cleans up, reports and exits.
	cfg.Finishing = func() {
		stderr.bound()
		out.bound()
	}
	var sinks multiSink
	var stream *streamSink
	if !f.quiet {
		stream = newStreamSink(out, f.format, f.textOptions())
		sinks = append(sinks, stream)
	}
	cfg.LossNotice = stderr
	if srv != nil {
		cfg.Metrics = srv.exporter
	}
	offending := report.NewOffenders(f.expects)
	if len(f.expects) > 0 {
		sinks = append(sinks, offending)
	}
	cfg.Sink = sinks
	begin := time.Now()
	outcome, err := start(cfg)
	if err != nil {
		writeNotStartedReports(f, target, begin, err)
		return err
	}
	var streamErr error
	if stream != nil {
		streamErr = stream.Close()
	}
	err = finish(out, f, target, outcome, offending)
	if streamErr != nil {
		// The reports are written; the events were not all.
		return fmt.Errorf("writing events: %w", streamErr)
	}
	return err
}

// writeNotStartedReports writes --report and --junit for a command that
// could not be started (not found, 127; not executable, 126), so that CI
// finds them with that exit code; the one error line is the caller's.
func writeNotStartedReports(f *watchFlags, target []string, begin time.Time, err error) {
	var code int
	switch {
	case errors.Is(err, child.ErrNotFound):
		code = exitNotFound
	case errors.Is(err, child.ErrNotExecutable):
		code = exitNotExec
	default:
		return
	}
	o := session.Outcome{Start: begin, End: time.Now(), ExitCode: code}
	// Nothing was loaded, so nothing was skipped: the same keys as a run's.
	o.Summary.SkippedByProgram = make(map[string]uint64)
	for _, p := range loader.Programs() {
		if p != loader.ExitProgram {
			o.Summary.SkippedByProgram[p] = 0
		}
	}
	outcomes := make([]events.Outcome, len(f.expects))
	for i, x := range f.expects {
		outcomes[i] = x.Evaluate(o.Summary)
	}
	writeReports(f, report.New(versionString(), target, o, outcomes, report.NewOffenders(f.expects)))
}

// writeReports writes --report and --junit. One that cannot be written (a
// full disk) is said, and the other one is still written: the exit code
// stays the command's.
func writeReports(f *watchFlags, rep *report.Report) {
	if f.report != "" {
		if err := rep.WriteJSON(f.report); err != nil {
			fmt.Fprintf(stderr, "sfwatch: %v\n", err)
		}
	}
	if f.junit != "" {
		if err := rep.WriteJUnit(f.junit); err != nil {
			fmt.Fprintf(stderr, "sfwatch: %v\n", err)
		}
	}
}

// finish prints what comes after the event stream (table, expectations,
// accounting line), writes the report files, and picks the exit code.
func finish(out io.Writer, f *watchFlags, target []string, o session.Outcome, offending *report.Offenders) error {
	s := o.Summary
	var writeErr error // reported after the report files are written
	if f.summary {
		// The table follows the events, as with strace -c -o FILE; but a
		// JSON Lines stream stays pure JSON, so then it goes to stderr.
		table := out
		if f.format == "json" {
			table = stderr
		}
		if err := events.WriteTable(table, s); err != nil {
			writeErr = fmt.Errorf("writing summary: %w", err)
		}
	}
	outcomes := make([]events.Outcome, len(f.expects))
	for i, x := range f.expects {
		outcomes[i] = x.Evaluate(s)
		fmt.Fprintln(stderr, describeOutcome(outcomes[i]))
		if ok := outcomes[i].OK; ok != nil && !*ok {
			for _, line := range strings.SplitAfter(offending.Text(i), "\n") {
				if line != "" {
					fmt.Fprint(stderr, "sfwatch:   ", line)
				}
			}
		}
	}
	fmt.Fprintln(stderr, events.AccountingLine(s))

	writeReports(f, report.New(versionString(), target, o, outcomes, offending))
	if writeErr != nil {
		return writeErr
	}
	if err := stderr.gaveUp(); err != nil {
		return err
	}
	return &exitError{code: exitCode(o.ExitCode, outcomes)}
}

// exitCode: a failed expectation outranks an inconclusive one, which
// outranks the child's own status.
func exitCode(childCode int, outcomes []events.Outcome) int {
	code := childCode
	for _, o := range outcomes {
		switch {
		case o.OK == nil && code != exitExpectFailed:
			code = exitInconclusive
		case o.OK != nil && !*o.OK:
			code = exitExpectFailed
		}
	}
	return code
}

func describeOutcome(o events.Outcome) string {
	verdict := "ok"
	switch {
	case o.OK == nil:
		verdict = "INCONCLUSIVE (" + o.Why + ")"
	case !*o.OK:
		verdict = "FAILED"
	}
	return fmt.Sprintf("sfwatch: expect %s: %s (%s = %d)", o.Expr, verdict, o.Key, o.Actual)
}

// streamSink writes one line per event, buffered, flushed when idle.
type streamSink struct {
	w           *bufio.Writer
	json        bool
	jsonOptions events.JSONOptions
	text        events.Text
	line        []byte
	err         error // the first write error; nothing is written after it
}

// newStreamSink renders format to w; -t, -tt and -ttt in opt give JSON its
// time_unix_ns.
func newStreamSink(w io.Writer, format string, opt events.TextOptions) *streamSink {
	s := &streamSink{w: bufio.NewWriterSize(w, 64<<10), json: format == "json", line: make([]byte, 0, 512)}
	s.text.Options = opt
	s.jsonOptions = events.JSONOptions{Time: opt.Timestamps != events.NoTimestamps, WallOffsetNs: opt.WallOffsetNs}
	return s
}

func (s *streamSink) Event(e *events.Event, v events.Verdict) {
	if s.err != nil {
		return // the output is gone (a closed pipe): stop rendering
	}
	if s.json {
		s.line = events.AppendJSON(s.line[:0], e, v, s.jsonOptions)
	} else {
		s.line = s.text.Append(s.line[:0], e, v)
	}
	_, s.err = s.w.Write(s.line)
}

func (s *streamSink) Idle() {
	if s.err == nil {
		s.err = s.w.Flush()
	}
}

// Close flushes and returns the first write error, if any.
func (s *streamSink) Close() error {
	s.Idle()
	return s.err
}

// multiSink hands each event to several sinks.
type multiSink []session.Sink

func (m multiSink) Event(e *events.Event, v events.Verdict) {
	for _, s := range m {
		s.Event(e, v)
	}
}

func (m multiSink) Idle() {
	for _, s := range m {
		s.Idle()
	}
}
