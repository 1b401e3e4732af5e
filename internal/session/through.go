package session

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/ringreader"
)

// runThrough is Run through the daemon (Config.Daemon). The order is
// Run's: the child is in its group before it runs an instruction of cmd
// (it is held until the daemon has moved it), its leftovers are killed
// before the final totals are read (Finish), and the ring buffer is
// drained after that.
func runThrough(ctx context.Context, cmd *exec.Cmd, cfg Config) (Outcome, error) {
	c := cfg.Daemon
	ringSize, err := ringSizeOf(cfg)
	if err != nil {
		return Outcome{}, err
	}
	sample := max(cfg.SampleEvery, 1)
	if cfg.Started != nil {
		// The daemon's programs are attached: every call of the child
		// is seen from its first instruction.
		cfg.Started()
	}
	proc, err := child.Start(child.Spec{Cmd: cmd, Gate: c.Gate(), User: cfg.User, ForwardSignals: cfg.ForwardSignals})
	if err != nil {
		return Outcome{}, err
	}
	run, err := c.Run(proc.PidFD(), ringSize, sample)
	if err != nil {
		// The held child exits without running cmd.
		proc.Abort()
		proc.Wait()
		return Outcome{}, c.Blame(err)
	}
	defer run.Ring.Close()
	// Released first, then the ring mapped (every page at once, most of
	// a millisecond for 8 MiB) while the command starts: its first events
	// wait in the ring meanwhile.
	if err := proc.Release(); err != nil {
		proc.Signal(syscall.SIGKILL)
		_, werr := proc.Wait()
		return Outcome{}, c.Blame(errors.Join(err, werr))
	}
	reader, err := ringreader.NewFD(int(run.Ring.Fd()), run.RingSize)
	if err != nil {
		c.Kill()
		proc.Wait()
		return Outcome{}, err
	}
	side := &remote{c: c}
	w := newWatch(side, reader, cfg)
	defer w.close()
	if cfg.ChildStarted != nil {
		cfg.ChildStarted(proc.Pid())
	}
	exited := make(chan struct{})
	defer afterCancel(ctx, cmd, exited, func() { c.Kill() })()
	// The daemon gone (stopped, or killed), nothing can kill the group:
	// the child at least ends now, with its process group when it has
	// its own (ForwardSignals). One thread waits for both.
	gone, pollErr := c.WaitExit(proc.PidFD())
	if gone {
		if cfg.ForwardSignals {
			syscall.Kill(-proc.Pid(), syscall.SIGKILL)
		}
		proc.Signal(syscall.SIGKILL)
	}
	exitErr := errors.Join(pollErr, proc.Exited())
	close(exited)
	if cfg.Finishing != nil {
		cfg.Finishing()
	}
	// Before Wait: leftovers in the group may hold the child's pipes.
	finishErr := side.finish()
	code, waitErr := proc.Wait()
	if finishErr != nil {
		return Outcome{ExitCode: code}, finishErr
	}
	out, err := w.finish()
	out.ExitCode = code
	return out, errors.Join(exitErr, waitErr, err)
}

// attachThrough is Attach through the daemon (Config.Daemon, root's).
func attachThrough(ctx context.Context, group *cgroup.Group, cfg Config) (Outcome, error) {
	c := cfg.Daemon
	ringSize, err := ringSizeOf(cfg)
	if err != nil {
		return Outcome{}, err
	}
	run, err := c.Attach(group.Path, ringSize, max(cfg.SampleEvery, 1))
	if err != nil {
		return Outcome{}, c.Blame(err)
	}
	defer run.Ring.Close()
	reader, err := ringreader.NewFD(int(run.Ring.Fd()), run.RingSize)
	if err != nil {
		return Outcome{}, err
	}
	side := &remote{c: c}
	w := newWatch(side, reader, cfg)
	defer w.close()
	if cfg.Started != nil {
		cfg.Started()
	}
	removed := watchGroup(ctx, group, c.Gone())
	if cfg.Finishing != nil {
		cfg.Finishing()
	}
	if err := side.finish(); err != nil {
		return Outcome{}, err
	}
	out, err := w.finish()
	out.GroupRemoved = removed
	return out, err
}

// remote is the daemon's side of a run: its totals are read over the
// connection until Finish, then they are final.
type remote struct {
	c     *client.Client
	mu    sync.Mutex
	final *counters.Snapshot
}

// ringSizeOf is the ring size a run asks the daemon for.
func ringSizeOf(cfg Config) (int, error) {
	size := cfg.RingBufSize
	if size == 0 {
		size = loader.DefaultRingBufSize
	}
	return size, loader.ValidateRingBufSize(size)
}

// finish ends the run in the daemon (Finish: its group killed, or the
// attach's watch stopped) and keeps its final totals.
func (r *remote) finish() error {
	t, err := r.c.Finish()
	if err != nil {
		return r.c.Blame(err)
	}
	s, err := counters.FromRow(t.Row, t.Skipped)
	if err != nil {
		return fmt.Errorf("reading the run's totals: %w", err)
	}
	r.mu.Lock()
	r.final = &s
	r.mu.Unlock()
	return nil
}

func (r *remote) Snapshot() (counters.Snapshot, error) {
	r.mu.Lock()
	final := r.final
	r.mu.Unlock()
	if final != nil {
		return *final, nil
	}
	t, err := r.c.Totals()
	if err != nil {
		return counters.Snapshot{}, err
	}
	return counters.FromRow(t.Row, t.Skipped)
}

func (r *remote) Lost() (uint64, error) {
	s, err := r.Snapshot()
	return s.Totals.Lost, err
}

// detach: Finish has emptied the group, so nothing writes the ring buffer.
func (r *remote) detach() error { return nil }

// close: the connection is the caller's.
func (r *remote) close() {}
