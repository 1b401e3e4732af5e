// Package session runs one traced workload end to end: it wires the group
// (cgroup), the process (child), the loader (BPF side), the ring-buffer
// reader, the counters and the events (decode, validate, aggregate)
// together, hands every event to a sink, and feeds the counters to the
// metrics exporter and the loss notice while the programs run.
//
// Order matters and is the point of this package: the group exists and the
// programs are attached before the child's first instruction; the child's
// leftovers are killed before the programs are detached; the ring buffer is
// drained after that, so no event is stranded and none arrives late.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/metrics"
	"github.com/sfwatch/sfwatch/internal/ringreader"
)

// DrainInterval bounds how long a trickle of events waits in the ring
// buffer: below the wakeup threshold the kernel does not wake the reader.
const DrainInterval = 100 * time.Millisecond

// Sink receives what the session sees, from a single goroutine.
type Sink interface {
	// Event is called once per delivered event, on the hot path: no
	// allocation, no blocking beyond a buffered write.
	Event(e *events.Event, v events.Verdict)
	// Idle is called when the reader has caught up: flush buffered output.
	Idle()
}

// Config is everything a session needs besides the command.
type Config struct {
	RingBufSize    int
	SampleEvery    uint32
	User           string // see child.Spec.User
	ForwardSignals bool   // see child.Spec.ForwardSignals
	Sink           Sink   // nil: events are only counted
	// Metrics, when set, reads the kernel's counters and the aggregate
	// of the delivered events from when the programs are attached until
	// just before they are closed, and is told the child is up meanwhile.
	Metrics Exporter
	// LossNotice, when set, gets a line in every LossNoticeInterval in
	// which events were lost while the programs run.
	LossNotice io.Writer
	// Started, when set, is called once the programs are attached and the
	// sinks above are fed: from then on every call is seen.
	Started func()
	// ChildStarted, when set, is called by Run with the child's pid once
	// the child runs, before Run waits for it.
	ChildStarted func(pid int)
	// Watchdog, when set, is the command line of a program that calls
	// cgroup.RunWatchdog (sfwatch re-executing itself): Run starts it to
	// kill and remove the group should this process die first.
	Watchdog []string
	// Finishing, when set, is called once the child has exited (Run) or ctx
	// has ended (Attach), before the final drain: a sink that may block
	// should from then on give up within a bounded time.
	Finishing func()
	// Daemon, when set, makes Run go through the daemon this client is
	// connected to instead of loading programs: the daemon places the
	// child, held before its exec, in a group of its own, and the
	// connection is the watchdog (Watchdog is not used). Everything else
	// is as without it.
	Daemon *client.Client
}

// Exporter is fed a session's totals while its programs are attached:
// metrics.Exporter.
type Exporter interface {
	SetSource(metrics.Source) // nil: stop reading the previous one
	SetEvents(*events.Aggregator)
	SetChildUp(bool)
}

// GroupCheckInterval is how often Attach checks that its group still exists.
const GroupCheckInterval = time.Second

// Outcome is what a finished session reports.
type Outcome struct {
	ExitCode int // the child's, as a shell reports it
	// GroupRemoved says that Attach ended because its group was removed.
	GroupRemoved bool
	Summary      events.Summary
	Start        time.Time
	End          time.Time
}

// Run starts cmd in a new cgroup under tracing, waits for it to exit (or
// ctx to end, which kills the group), and returns the outcome. Nothing is
// left behind: the group is removed and the programs detached.
func Run(ctx context.Context, cmd *exec.Cmd, cfg Config) (Outcome, error) {
	// A missing or non-executable command fails before anything exists.
	if err := child.Resolve(cmd); err != nil {
		return Outcome{}, err
	}
	if cfg.Daemon != nil {
		return runThrough(ctx, cmd, cfg)
	}
	// Nor is a group created on a kernel the programs cannot load on.
	if err := loader.CheckKernel(); err != nil {
		return Outcome{}, err
	}
	group, err := cgroup.New()
	if err != nil {
		return Outcome{}, err
	}
	var dog *cgroup.Watchdog
	if cfg.Watchdog != nil {
		if dog, err = group.StartWatchdog(cfg.Watchdog); err != nil {
			group.Close()
			return Outcome{}, err
		}
	}
	defer func() {
		group.Close()
		dog.Stop() // after Close: it then finds nothing to do
	}()

	w, err := start(group, cfg, true)
	if err != nil {
		return Outcome{}, err
	}
	defer w.close()

	proc, err := child.Start(child.Spec{
		Cmd:            cmd,
		Group:          group,
		User:           cfg.User,
		ForwardSignals: cfg.ForwardSignals,
	})
	if err != nil {
		return Outcome{}, err
	}
	if cfg.ChildStarted != nil {
		cfg.ChildStarted(proc.Pid())
	}
	exited := make(chan struct{})
	defer afterCancel(ctx, cmd, exited, func() { w.kill(group) })()

	// Whatever the child left running in the group (daemonized
	// grandchildren), or outside it (tasks that left), ends with it,
	// before Wait, since such a process may hold the child's output pipes
	// open.
	exitErr := proc.Exited()
	close(exited)
	if cfg.Finishing != nil {
		cfg.Finishing()
	}
	killErr := w.kill(group)
	code, waitErr := proc.Wait()
	out, err := w.finish()
	out.ExitCode = code
	return out, errors.Join(exitErr, killErr, waitErr, err)
}

// afterCancel calls cancel once ctx is done, until the returned stop,
// which waits for a cancel under way: nothing reads the run's tracer
// after it is closed.
func afterCancel(ctx context.Context, cmd *exec.Cmd, exited <-chan struct{}, kill func()) (stop func()) {
	done := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		defer close(done)
		cancel(cmd, exited, kill)
	})
	return func() {
		if !stopFunc() {
			<-done
		}
	}
}

// cancel ends a run whose ctx is done: with the caller's cmd.Cancel
// first (a graceful stop, SIGTERM say), then kill once cmd.WaitDelay has
// passed without the command exiting (at once when it is zero); without
// cmd.Cancel, kill at once.
func cancel(cmd *exec.Cmd, exited <-chan struct{}, kill func()) {
	if cmd.Cancel != nil {
		cmd.Cancel()
		if cmd.WaitDelay > 0 {
			select {
			case <-exited:
				return
			case <-time.After(cmd.WaitDelay):
			}
		}
	}
	kill()
}

// Attach watches an existing group until ctx ends or the group is removed
// (checked every GroupCheckInterval). Nothing in the group is started,
// signalled or killed.
func Attach(ctx context.Context, group *cgroup.Group, cfg Config) (Outcome, error) {
	if cfg.Daemon != nil {
		return attachThrough(ctx, group, cfg)
	}
	w, err := start(group, cfg, false)
	if err != nil {
		return Outcome{}, err
	}
	defer w.close()
	removed := watchGroup(ctx, group, nil)
	if cfg.Finishing != nil {
		cfg.Finishing()
	}
	out, err := w.finish()
	out.GroupRemoved = removed
	return out, err
}

// watchGroup waits until ctx ends, gone is closed, or group is removed
// (checked every GroupCheckInterval), and says whether it was removed.
func watchGroup(ctx context.Context, group *cgroup.Group, gone <-chan struct{}) (removed bool) {
	tick := time.NewTicker(GroupCheckInterval)
	defer tick.Stop()
	for !removed && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-gone:
			return false
		case <-tick.C:
			removed = group.Removed()
		}
	}
	return removed
}

// side is where a watch's totals come from, and what stops its events:
// its own programs (tracer) or the daemon's (remote).
type side interface {
	Snapshot() (counters.Snapshot, error) // a metrics.Source
	Lost() (uint64, error)
	// detach stops the events: none is written to the ring buffer after
	// it returns.
	detach() error
	close()
}

// watch is the BPF side and its consumer for one group.
type watch struct {
	side   side
	reader *ringreader.Reader // the side's events
	sink   Sink
	agg    events.Aggregator
	start  time.Time
	done   chan error
	once   sync.Once

	metrics        Exporter // Config.Metrics
	stopLossNotice func()   // nil without Config.LossNotice
}

// start loads and attaches the programs for group; follow keeps watching
// the tasks that leave it (run).
func start(group *cgroup.Group, cfg Config, follow bool) (*watch, error) {
	tracer, err := loader.Open(loader.Config{
		CgroupID:    group.ID,
		CgroupLevel: group.Level,
		RingBufSize: cfg.RingBufSize,
		SampleEvery: cfg.SampleEvery,
		Follow:      follow,
		CgroupPath:  group.Rel,
	})
	if err != nil {
		return nil, err
	}
	counts, err := counters.New(tracer.Maps(), tracer.Skips)
	if err != nil {
		tracer.Close()
		return nil, err
	}
	reader, err := ringreader.New(tracer.Maps().Events)
	if err != nil {
		tracer.Close()
		return nil, err
	}
	w := newWatch(&own{tracer: tracer, Reader: counts}, reader, cfg)
	if cfg.Started != nil {
		cfg.Started()
	}
	return w, nil
}

// newWatch starts consuming reader and feeding the sinks of cfg.
func newWatch(side side, reader *ringreader.Reader, cfg Config) *watch {
	w := &watch{side: side, reader: reader, sink: cfg.Sink, start: time.Now(), done: make(chan error, 1), metrics: cfg.Metrics}
	if w.sink == nil {
		w.sink = discard{}
	}
	go func() { w.done <- w.consume() }()
	// Until close, the side is open: the exporter and the loss notice
	// read its counters; after close, nothing does.
	if cfg.LossNotice != nil {
		w.stopLossNotice = startLossNotice(cfg.LossNotice, LossNoticeInterval, side.Lost)
	}
	if w.metrics != nil {
		w.metrics.SetSource(side)
		w.metrics.SetEvents(&w.agg)
		w.metrics.SetChildUp(true)
	}
	return w
}

// own is a session's own programs.
type own struct {
	tracer *loader.Tracer
	*counters.Reader
}

func (o *own) detach() error {
	if err := o.tracer.Detach(); err != nil {
		return fmt.Errorf("detaching programs: %w", err)
	}
	return nil
}

func (o *own) close() { o.tracer.Close() }

// consume reads records until the final flush (ringreader.Consume).
func (w *watch) consume() error {
	var ev events.Event
	handle := func(raw []byte) error {
		if err := events.Decode(raw, &ev); err != nil {
			return err
		}
		v := events.Validate(&ev)
		w.agg.Add(&ev, v)
		w.sink.Event(&ev, v)
		return nil
	}
	return w.reader.Consume(DrainInterval, handle, w.sink.Idle)
}

// finish detaches the programs, drains the ring buffer, and reads the
// final totals.
func (w *watch) finish() (Outcome, error) {
	out := Outcome{Start: w.start}
	if err := w.side.detach(); err != nil {
		return out, err
	}
	if err := w.reader.Flush(); err != nil {
		return out, fmt.Errorf("flushing ring buffer: %w", err)
	}
	if err := <-w.done; err != nil {
		return out, err
	}
	snap, err := w.side.Snapshot()
	if err != nil {
		return out, err
	}
	out.End = time.Now()
	out.Summary = w.agg.Summary(snap)
	return out, nil
}

// killTimeout bounds how long kill keeps at the run's tasks outside its
// group, which may fork as they are killed.
const killTimeout = 2 * time.Second

// kill ends every task of the run: the group's, and those that left it
// (followed by the BPF side, which also tracks what they fork while this
// runs). The group is killed first, so nothing in it forks a new escape.
func (w *watch) kill(group *cgroup.Group) error {
	err := group.Kill()
	tracer := w.side.(*own).tracer
	for deadline := time.Now().Add(killTimeout); ; {
		tasks, ferr := tracer.Followed()
		if ferr != nil {
			return errors.Join(err, ferr)
		}
		alive := 0
		for _, task := range tasks {
			// Not the same task: gone, and its exit not yet seen by the
			// BPF side (or never: the kernel may skip that program).
			// ESRCH: gone since.
			if task.Alive() && syscall.Kill(task.TID, syscall.SIGKILL) == nil {
				alive++
			}
		}
		if alive == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return errors.Join(err, fmt.Errorf("killing the run's tasks that left its group: %d still alive after %v", alive, killTimeout))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *watch) close() {
	w.once.Do(func() {
		if w.stopLossNotice != nil {
			w.stopLossNotice()
		}
		if w.metrics != nil {
			// The aggregate stays: the final counts.
			w.metrics.SetChildUp(false)
			w.metrics.SetSource(nil)
		}
		// The reader first: a consumer still running gets os.ErrClosed.
		w.reader.Close()
		w.side.close()
	})
}

type discard struct{}

func (discard) Event(*events.Event, events.Verdict) {}
func (discard) Idle()                               {}
