package sfwatch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/session"
)

// Options tune a Run; the zero value (or nil) is the default.
type Options struct {
	// RingBufSize is the event ring buffer in bytes, a power of two.
	// Zero means 8 MiB, enough for a tight loop of a million calls.
	RingBufSize int
	// User runs the command as this user (a name or a uid). Empty keeps
	// the current user, even under sudo, unlike the sfwatch command, which
	// runs the command as the user behind sudo.
	User string
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
	Class      string    // ok, short, eof or error
	Start      time.Time // when the call entered the kernel, wall clock
	Duration   time.Duration
	Violations []string // sendfile contract rules the call broke; empty when fine
}

// Summary holds the totals of a run. Calls, Bytes, Errors, Short, EOF,
// OffsetNull and OffsetPtr are counted in the kernel and exact even when
// events were lost.
type Summary = events.Summary

// Result is what Run observed.
type Result struct {
	Events   []Event
	Summary  Summary
	ExitCode int // the command's exit status; 128+N when killed by signal N
}

// Supported reports whether this process can trace here: nil, or the
// reason it cannot (for t.Skip or t.Fatal, as the caller decides).
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("sfwatch needs root to load BPF programs and create cgroups")
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
// see Result.ExitCode. Cancelling ctx kills cmd and everything it started.
func Run(ctx context.Context, cmd *exec.Cmd, opts *Options) (*Result, error) {
	if opts == nil {
		opts = &Options{}
	}
	name := opts.User
	if name == "" {
		name = strconv.Itoa(os.Geteuid())
	}
	sink := &collector{wallOffsetNs: events.WallOffset()}
	o, err := session.Run(ctx, cmd, session.Config{
		RingBufSize: opts.RingBufSize,
		User:        name,
		Sink:        sink,
	})
	if err != nil {
		return nil, err
	}
	return &Result{Events: sink.events, Summary: o.Summary, ExitCode: o.ExitCode}, nil
}

// collector converts each event to the public form.
type collector struct {
	events       []Event
	wallOffsetNs int64 // CLOCK_MONOTONIC (the BPF clock) to Unix time
}

func (c *collector) Event(e *events.Event, v events.Verdict) {
	ev := Event{
		PID:        int(e.Pid),
		TID:        int(e.Tid),
		Comm:       e.Comm(),
		OutFD:      int(e.OutFd),
		InFD:       int(e.InFd),
		Count:      e.Count,
		Ret:        e.Ret,
		Class:      v.Class.String(),
		Start:      time.Unix(0, e.UnixNs(c.wallOffsetNs)),
		Duration:   time.Duration(e.DurationNs),
		Violations: v.Violations.Names(),
	}
	if !e.OffsetNull() {
		ev.Offset = &Offset{Before: e.OffsetBefore, After: e.OffsetAfter, Known: !v.OffsetUnknown}
	}
	if errno := e.Errno(); errno != 0 {
		ev.Errno = events.ErrnoName(errno)
	}
	c.events = append(c.events, ev)
}

func (c *collector) Idle() {}
