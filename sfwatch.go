package sfwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/metrics"
	"github.com/sfwatch/sfwatch/internal/session"
)

// Options tune a Run; the zero value (or nil) is the default.
type Options struct {
	// RingBufSize is the event ring buffer in bytes, a power of two.
	// Zero means 8 MiB, enough for a tight loop of a million calls.
	RingBufSize int
	// User runs the command as this user (a name or a uid). Empty keeps
	// the current user, even under sudo, as the sfwatch command and strace
	// do.
	User string
	// Via chooses who traces: the daemon, when its socket answers (the
	// default), or programs of Run's own. Through the daemon Run needs no
	// privilege and costs milliseconds.
	Via Via
	// Socket is the daemon's socket. Empty: $SFWATCH_SOCKET, else
	// /run/sfwatch/sfwatch.sock.
	Socket string
	// MaxEvents bounds Result.Events: the first MaxEvents calls are kept,
	// the others counted in Result.EventsDropped (Summary counts every
	// call). 0 means DefaultMaxEvents; negative keeps none.
	MaxEvents int
}

// DefaultMaxEvents is Options.MaxEvents' default: about 20 MiB of events.
const DefaultMaxEvents = 100_000

// Via is who traces a Run.
type Via int

const (
	// Auto uses the daemon when its socket answers, else loads Run's own
	// programs (which needs root).
	Auto Via = iota
	// Daemon requires the daemon: Run fails when none answers.
	Daemon
	// Standalone loads Run's own programs even with a daemon up.
	Standalone
)

// connect returns a client of the daemon, or nil for Run's own programs.
func (o *Options) connect() (*client.Client, error) {
	if o.Via == Standalone {
		return nil, nil
	}
	c, err := client.Dial(client.Socket(o.Socket))
	if err == nil || (o.Via == Auto && errors.Is(err, client.ErrNoDaemon)) {
		return c, nil
	}
	return nil, err
}

// Offset is the value of the offset argument before and after a call.
type Offset struct {
	Before, After int64
	// Known is false when the kernel could not read the offset from the
	// traced program's memory; Before and After are then meaningless.
	Known bool
}

// Event is one sendfile call.
type Event struct {
	PID, TID   int
	Comm       string
	OutFD      int
	InFD       int
	Offset     *Offset // nil for a NULL offset argument
	Count      uint64
	Ret        int64     // bytes sent, or -errno
	Errno      string    // the errno's name when Ret < 0, such as "EBADF"
	Class      string    // ok, short, eof, empty (a Count of 0 that returned 0) or error
	Start      time.Time // when the call entered the kernel, wall clock
	Duration   time.Duration
	Violations []string // sendfile contract rules the call broke; empty when fine
}

// Summary holds the totals of a run. The fields up to MissedExits are
// counted in the kernel and exact even when events were lost; the rest are
// drawn from the events, and exact only when Complete.
type Summary struct {
	Calls      uint64 // sendfile calls that returned
	Bytes      uint64 // bytes sent: the sum of positive return values
	Errors     uint64 // calls that failed (Ret < 0)
	Short      uint64 // calls that sent less than asked (0 < Ret < Count)
	EOF        uint64 // calls with a Count above 0 that returned 0: end of file (see Empty)
	OffsetNull uint64 // calls with a NULL offset argument
	OffsetPtr  uint64 // calls with an offset pointer
	Lost       uint64 // events dropped because the ring buffer was full
	SampledOut uint64 // events not emitted because of sampling
	Unpaired   uint64 // calls already in flight when tracing began: not counted
	// Restarts are calls a signal interrupted before any byte moved and
	// the kernel ran again: not calls, not errors. A call the signal ended
	// with EINTR is a call and an error.
	Restarts      uint64
	Escaped       uint64            // tasks of the command that left its cgroup: followed, their calls counted
	ErrorsByErrno map[string]uint64 // failed calls by errno name, such as "EBADF"; a Ret below -4095 is in Errors only
	// Skipped is how many times the kernel did not run one of sfwatch's
	// programs (SkippedByProgram, by program). Not zero, the counts above
	// are lower bounds: a skipped entry or exit is a call counted nowhere.
	Skipped          uint64
	SkippedByProgram map[string]uint64
	// MissedExits counts thread exits the kernel skipped telling sfwatch
	// (its sched_process_exit program's skips): they cost no call.
	MissedExits uint64

	Events uint64 // events delivered: one per call unless some were lost or sampled out
	// Empty counts the calls with a Count of 0 that returned 0, from the
	// events. The kernel counts them with EOF: when events were lost, EOF
	// may still hold some.
	Empty            uint64
	EventsByClass    map[string]uint64 // delivered events by Event.Class; only classes seen
	Violations       uint64            // delivered events that broke at least one rule
	ViolationsByRule map[string]uint64 // delivered events by rule broken; only rules broken
	OffsetUnknown    uint64            // offset pointers that could not be read (Offset.Known false)
	P50, P99, Max    time.Duration     // call durations; Max exact, the quantiles within about 3%
	FirstViolations  []Event           // the first few events that broke a rule
}

// Complete reports whether every call was delivered as an event, so that
// the facts drawn from the events (Violations, latency) are exact rather
// than a sample.
func (s Summary) Complete() bool { return s.Lost == 0 && s.SampledOut == 0 && s.Skipped == 0 }

func summaryOf(s *events.Summary, wallOffsetNs int64) Summary {
	first := make([]Event, len(s.FirstViolations))
	for i := range s.FirstViolations {
		first[i] = eventOf(&s.FirstViolations[i].Event, s.FirstViolations[i].Verdict, wallOffsetNs)
	}
	return Summary{
		Calls: s.Calls, Bytes: s.Bytes, Errors: s.Errors, Short: s.Short, EOF: s.EOF,
		OffsetNull: s.OffsetNull, OffsetPtr: s.OffsetPtr,
		Lost: s.Lost, SampledOut: s.SampledOut, Unpaired: s.Unpaired, Restarts: s.Restarts,
		Escaped: s.Escaped, ErrorsByErrno: s.ErrorsByErrno,
		Skipped: s.Skipped, SkippedByProgram: s.SkippedByProgram, MissedExits: s.MissedExits,

		Events: s.Events, Empty: s.Empty, EventsByClass: s.EventsByClass,
		Violations: s.Violations, ViolationsByRule: s.ViolationsByRule,
		OffsetUnknown: s.OffsetUnknown, P50: s.P50, P99: s.P99, Max: s.Max,
		FirstViolations: first,
	}
}

// Result is what Run observed.
type Result struct {
	Events        []Event // the first Options.MaxEvents calls, in order
	EventsDropped uint64  // calls delivered past Options.MaxEvents, not in Events
	Summary       Summary
	ExitCode      int // the command's exit status; 128+N when killed by signal N
}

// Supported reports whether Run can trace here with the default Options:
// nil, or the reason it cannot (for t.Skip or t.Fatal, as the caller
// decides). With a daemon up, any user can.
func Supported() error { return (&Options{}).Supported() }

// Supported is the package's Supported for a Run with these options.
func (opts *Options) Supported() error {
	c, err := opts.connect()
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
		return c.Hello()
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("sfwatch needs root to load BPF programs and create cgroups, or a daemon ('sudo sfwatch daemon') to trace for any user")
	}
	if _, err := cgroup.Mount(); err != nil {
		return err
	}
	if err := loader.EnsureTracefs(); err != nil {
		return err
	}
	return nil
}

// Run starts cmd (not yet started, like exec.Cmd.Run expects) in a new
// cgroup, traces every sendfile call of it and its descendants, waits for it
// to exit, and returns what it did. A non-zero exit of cmd is not an error:
// see Result.ExitCode. A command that is not found gives an error for
// which errors.Is(err, exec.ErrNotFound) holds; one that cannot be
// executed, errors.Is(err, fs.ErrPermission). Cancelling ctx kills cmd
// and everything it started: with cmd.Cancel set (exec.CommandContext),
// Cancel first, and the rest once cmd.WaitDelay has passed without cmd
// exiting (at once when it is zero).
// cmd.SysProcAttr is kept as set (Setpgid, Setsid, Pdeathsig, Credential,
// ...): Run adds only the cgroup, and Options.User's credentials.
//
// Through the daemon (Options.Via), cmd first runs this program's own
// executable, held before the exec of cmd until the daemon has placed it
// in its group: so this program's package initializers run in it, and
// nothing of cmd runs untraced.
func Run(ctx context.Context, cmd *exec.Cmd, opts *Options) (*Result, error) {
	t, err := start(ctx, cmd, opts, false)
	if err != nil {
		return nil, err
	}
	return t.Wait()
}

// Trace is a command that Start started and watches.
type Trace struct {
	pid     int
	events  chan Event
	live    live
	done    chan struct{}
	result  *Result
	err     error
	dropped atomic.Uint64 // events Events' reader was too slow for
}

// eventsBuffer is how many events wait for Trace.Events' reader before
// the next ones are dropped (counted in Trace.EventsMissed).
const eventsBuffer = 4096

// Start starts cmd as Run does and returns once cmd runs and every call
// of it is watched; Wait then waits for it and returns what Run returns.
// Meanwhile Pid, Summary and Events read the run as it goes. A command
// that cannot start is Start's error.
func Start(ctx context.Context, cmd *exec.Cmd, opts *Options) (*Trace, error) {
	return start(ctx, cmd, opts, true)
}

// start is Start; without stream (Run), Events stays empty and no event
// is converted past Options.MaxEvents.
func start(ctx context.Context, cmd *exec.Cmd, opts *Options, stream bool) (*Trace, error) {
	if opts == nil {
		opts = &Options{}
	}
	through, err := opts.connect()
	if err != nil {
		return nil, err
	}
	t := &Trace{events: make(chan Event, eventsBuffer), done: make(chan struct{})}
	sink := &collector{wallOffsetNs: events.WallOffset(), max: opts.MaxEvents, missed: &t.dropped}
	if stream {
		sink.stream = t.events
	}
	if sink.max == 0 {
		sink.max = DefaultMaxEvents
	}
	started := make(chan int, 1)
	cfg := session.Config{
		RingBufSize:  opts.RingBufSize,
		User:         opts.User,
		Sink:         sink,
		Daemon:       through,
		Metrics:      &t.live,
		ChildStarted: func(pid int) { started <- pid },
	}
	go func() {
		defer close(t.done)
		o, err := session.Run(ctx, cmd, cfg)
		if through != nil {
			through.Close()
		}
		close(t.events)
		if err != nil {
			t.err = err
			return
		}
		t.result = &Result{Events: sink.events, EventsDropped: sink.dropped, Summary: summaryOf(&o.Summary, sink.wallOffsetNs), ExitCode: o.ExitCode}
	}()
	select {
	case t.pid = <-started:
		return t, nil
	case <-t.done:
		return nil, t.err
	}
}

// Pid is the command's process id.
func (t *Trace) Pid() int { return t.pid }

// Events delivers each call as it is seen, and is closed when the run
// ends. A reader that falls behind by more than 4096 events misses the
// next ones (EventsMissed counts them): the command is never slowed.
// Result.Events has them all, up to Options.MaxEvents.
func (t *Trace) Events() <-chan Event { return t.events }

// EventsMissed is the events that Events' reader was too slow for.
func (t *Trace) EventsMissed() uint64 { return t.dropped.Load() }

// Summary is the run's exact totals so far, as the kernel counts them
// (Calls to MissedExits, and Events); the fields drawn from the events
// (Empty, EventsByClass, Violations, latencies, FirstViolations) are
// only in Wait's Result. After the run, Wait's.
func (t *Trace) Summary() Summary {
	select {
	case <-t.done:
		if t.result != nil {
			return t.result.Summary
		}
		return Summary{}
	default:
	}
	s, err := t.live.summary()
	if err != nil {
		return Summary{}
	}
	return summaryOf(&s, 0)
}

// Wait waits for the run to end (the command exited, or ctx ended) and
// returns what it observed, as Run does.
func (t *Trace) Wait() (*Result, error) {
	<-t.done
	return t.result, t.err
}

// live is the session's exporter hook: what Summary reads while the run
// goes on.
type live struct {
	mu  sync.Mutex
	src metrics.Source
	agg *events.Aggregator
}

func (l *live) SetSource(src metrics.Source) {
	l.mu.Lock()
	l.src = src
	l.mu.Unlock()
}

func (l *live) SetEvents(agg *events.Aggregator) {
	l.mu.Lock()
	l.agg = agg
	l.mu.Unlock()
}

func (l *live) SetChildUp(bool) {}

func (l *live) summary() (events.Summary, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.src == nil || l.agg == nil {
		return events.Summary{}, errors.New("not running")
	}
	k, err := l.src.Snapshot()
	if err != nil {
		return events.Summary{}, err
	}
	return l.agg.KernelSummary(k), nil
}

// collector converts each event to the public form, keeps up to max of
// them, and hands each to stream (nil for Run) without waiting (missed
// counts those it had no room for).
type collector struct {
	events       []Event
	max          int
	dropped      uint64
	stream       chan<- Event
	missed       *atomic.Uint64
	wallOffsetNs int64 // CLOCK_MONOTONIC (the BPF clock) to Unix time
}

// Event converts e (it allocates) only when it goes somewhere: Result's
// first max events, or the stream's free room.
func (c *collector) Event(e *events.Event, v events.Verdict) {
	keep := len(c.events) < c.max
	if !keep {
		c.dropped++
	}
	send := c.stream != nil && len(c.stream) < cap(c.stream)
	if c.stream != nil && !send {
		c.missed.Add(1)
	}
	if !keep && !send {
		return
	}
	ev := eventOf(e, v, c.wallOffsetNs)
	if keep {
		c.events = append(c.events, ev)
	}
	if send {
		// The consumer is the one writer: room seen is room kept.
		c.stream <- ev
	}
}

func eventOf(e *events.Event, v events.Verdict, wallOffsetNs int64) Event {
	ev := Event{
		PID:        int(e.Pid),
		TID:        int(e.Tid),
		Comm:       e.Comm(),
		OutFD:      int(e.OutFd),
		InFD:       int(e.InFd),
		Count:      e.Count,
		Ret:        e.Ret,
		Class:      v.Class.String(),
		Start:      time.Unix(0, e.UnixNs(wallOffsetNs)),
		Duration:   time.Duration(e.DurationNs),
		Violations: v.Violations.Names(),
	}
	if !e.OffsetNull() {
		ev.Offset = &Offset{Before: e.OffsetBefore, After: e.OffsetAfter, Known: !v.OffsetUnknown}
	}
	if errno := e.Errno(); errno != 0 {
		ev.Errno = events.ErrnoName(errno)
	}
	return ev
}

func (c *collector) Idle() {}
