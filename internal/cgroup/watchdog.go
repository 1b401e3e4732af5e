package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// watchdogStopTimeout bounds how long Stop waits for the watchdog to see
// that its group is gone and exit.
const watchdogStopTimeout = time.Second

// Watchdog is a helper process that kills and removes an owned group when
// its owner dies without doing so itself (SIGKILL, a crash): otherwise the
// child would run on, untraced, until some later New swept the group.
//
// It holds the read end of a pipe whose write end only the owner holds
// (close-on-exec: the child never gets it), so the kernel closes it when
// the owner dies, however it dies, and the helper reads EOF. A pipe rather
// than PR_SET_PDEATHSIG, which in Go fires when the thread that started the
// helper exits, not the process.
type Watchdog struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end
}

// StartWatchdog starts argv with the group's path and id appended, a
// program that calls RunWatchdog with them (sfwatch re-executing itself).
// It runs in its own session, outside the group, with its output going
// nowhere: nothing of the child's or of a terminal reaches it.
func (g *Group) StartWatchdog(argv []string) (*Watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(argv[0], append(argv[1:], g.Path, strconv.FormatUint(g.ID, 10))...)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	return &Watchdog{cmd: cmd, pipe: w}, nil
}

// Stop closes the pipe and waits, at most watchdogStopTimeout, for the
// watchdog to exit; after Group.Close it has nothing to do. A nil
// Watchdog is fine.
func (d *Watchdog) Stop() error {
	if d == nil {
		return nil
	}
	d.pipe.Close()
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(watchdogStopTimeout):
		d.cmd.Process.Kill()
		<-done
		return fmt.Errorf("stopping the watchdog: still running after %v; killed", watchdogStopTimeout)
	}
}

// RunWatchdog is the watchdog's body; args are the group's path and id.
// It waits for EOF on stdin (the owner is done or dead), then kills and
// removes the group if it is still there: the same directory, not a new
// one under the same name.
func RunWatchdog(args []string) error {
	if len(args) != 2 {
		return errors.New("watchdog: want the group's path and id")
	}
	path := args[0]
	id, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return fmt.Errorf("watchdog: group id %q: %w", args[1], err)
	}
	// Signals for the owner (a service manager's SIGTERM to all its
	// processes) must not end the watchdog before the owner.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	io.Copy(io.Discard, os.Stdin)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	if fi.Sys().(*syscall.Stat_t).Ino != id {
		return nil
	}
	return killAndRemove(path)
}
