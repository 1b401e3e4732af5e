package child

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/gate"
)

// Errors of Start and Resolve, for errors.Is: a shell exits 127 for the first
// and 126 for the second. They are also exec.ErrNotFound and
// fs.ErrPermission for errors.Is, as os/exec's own errors are.
var (
	ErrNotFound      error = kindError{"command not found", exec.ErrNotFound}
	ErrNotExecutable error = kindError{"not executable", fs.ErrPermission}
)

// kindError is an error that errors.Is also takes for the standard
// library's error of the same kind.
type kindError struct {
	msg  string
	also error
}

func (e kindError) Error() string        { return e.msg }
func (e kindError) Is(target error) bool { return target == e.also }

// forwarded are the signals that ForwardSignals passes on to the child.
var forwarded = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP,
	syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
}

// Spec describes the program to start.
type Spec struct {
	// Cmd is the program, not yet started. Path, Args, Env, Dir, Stdin,
	// Stdout, Stderr, ExtraFiles and SysProcAttr (Setpgid, Setsid,
	// Pdeathsig, Credential, ...) are used as set: Start adds to a copy of
	// SysProcAttr only the group (UseCgroupFD, CgroupFD) and, with User,
	// the credentials.
	Cmd *exec.Cmd
	// Group is where the child starts, from its first instruction.
	Group *cgroup.Group
	// Gate, instead of a Group, starts the child held at the gate at
	// this path, before the exec of Cmd (package gate): someone else (the
	// daemon) places it, then Process.Release lets it run Cmd. PidFD is
	// then its pidfd.
	Gate string
	// User runs the child as this user: a name, or a numeric uid (one
	// without a passwd entry gets the same number as its gid and no
	// supplementary groups). Empty: our own credentials, as strace runs
	// its command (under sudo, root: `sudo strace CMD` runs CMD as root).
	User string
	// ForwardSignals passes SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
	// SIGUSR2 on to the child, exactly once each; see the package doc.
	ForwardSignals bool
}

// Process is a started child.
type Process struct {
	cmd     *exec.Cmd
	signals chan os.Signal // nil unless forwarding
	tty     int            // the terminal handed to the child, or -1
	hold    *gate.Hold     // Spec.Gate: until Release
	pidfd   int            // Spec.Gate: the child's pidfd, or -1
}

// Start starts s.Cmd inside s.Group. A command that is not found or not
// executable gives an error that wraps ErrNotFound or ErrNotExecutable.
func Start(s Spec) (*Process, error) {
	if s.Cmd == nil || (s.Group == nil) == (s.Gate == "") {
		return nil, errors.New("starting child: Spec needs a Cmd and either a Group or a Gate")
	}
	cmd := s.Cmd
	if err := Resolve(cmd); err != nil {
		return nil, err
	}
	cred, err := credential(s.User)
	if err != nil {
		return nil, err
	}
	// The caller's attributes, on a copy: a process group or a parent
	// death signal the caller asked for is kept (a killpg of the child's
	// own group must not reach the caller's).
	attr := &syscall.SysProcAttr{}
	if cmd.SysProcAttr != nil {
		*attr = *cmd.SysProcAttr
	}
	if s.Group != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, s.Group.FD()
	}
	if cred != nil {
		attr.Credential = cred
	}
	p := &Process{cmd: cmd, tty: -1, pidfd: -1}
	if s.Gate != "" {
		if p.hold, err = gate.Prepare(cmd, s.Gate); err != nil {
			return nil, err
		}
	}
	if s.ForwardSignals {
		attr.Setpgid = true
		if isForeground(0) {
			// Go's child calls tcsetpgrp itself, between setpgid and
			// exec, with signals blocked so it is not stopped by SIGTTOU.
			attr.Foreground, attr.Ctty = true, 0
			p.tty = 0
		}
		// Notify before the child exists: a signal that comes in between
		// is queued and forwarded once it does.
		p.signals = make(chan os.Signal, 16)
		signal.Notify(p.signals, forwarded...)
	}
	cmd.SysProcAttr = attr
	err = cmd.Start()
	if p.hold != nil {
		p.hold.Started()
	}
	if err != nil {
		// The child may have taken the terminal before its exec failed.
		return nil, errors.Join(classify(cmd.Path, err), p.release())
	}
	if p.hold != nil {
		// Not reaped until Wait: the pid is the child's, so is the pidfd.
		if p.pidfd, err = unix.PidfdOpen(p.Pid(), 0); err != nil {
			p.hold.Abort()
			p.cmd.Process.Kill()
			_, werr := p.Wait()
			return nil, errors.Join(fmt.Errorf("opening the pidfd of pid %d: %w", p.Pid(), err), werr)
		}
	}
	if p.signals != nil {
		go p.forward(p.signals) // its own copy: release clears the field
	}
	return p, nil
}

// Pid returns the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// PidFD is the held child's pidfd (Spec.Gate), valid until Wait; -1
// otherwise.
func (p *Process) PidFD() int { return p.pidfd }

// Release lets a held child exec its command (Spec.Gate).
func (p *Process) Release() error {
	if p.hold == nil {
		return errors.New("releasing a child that is not held")
	}
	return p.hold.Release()
}

// Abort makes a held child exit without running its command; Wait then
// reaps it. Harmless after Release.
func (p *Process) Abort() {
	if p.hold != nil {
		p.hold.Abort()
	}
}

// Signal sends sig to the child.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling pid %d: %w", p.Pid(), err)
	}
	return nil
}

// Exited blocks until the child has exited, without reaping it (waitid
// with WNOWAIT): the caller can then kill what the child left in its group
// (which may hold its output pipes) before Wait collects the status.
func (p *Process) Exited() error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.Pid(), &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for pid %d to exit: %w", p.Pid(), err)
		}
		return nil
	}
}

// Wait waits for the child, and for the copying of its output when Stdout or
// Stderr is not a file, then stops forwarding signals and makes our process
// group the terminal's foreground again. It returns the status as a shell
// reports it: the exit code, or 128+N when the child was killed by signal N.
// A non-zero status is not an error.
//
// A daemon that the child left behind and that still holds such an output
// pipe keeps Wait waiting until it exits, as with exec.Cmd: set
// Cmd.WaitDelay, or Kill the group, to bound that.
func (p *Process) Wait() (int, error) {
	err := p.cmd.Wait()
	if _, ok := errors.AsType[*exec.ExitError](err); ok {
		err = nil
	} else if err != nil {
		err = fmt.Errorf("waiting for pid %d: %w", p.Pid(), err)
	}
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	return exitCode(p.cmd.ProcessState), errors.Join(err, p.release())
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// forward passes each signal on to the child's pid until release.
func (p *Process) forward(signals <-chan os.Signal) {
	for sig := range signals {
		// After the child is reaped this fails with os.ErrProcessDone:
		// os.Process holds a pidfd, so a reused pid is never hit.
		p.cmd.Process.Signal(sig)
	}
}

// release stops forwarding and takes the terminal back.
func (p *Process) release() error {
	if p.signals != nil {
		signal.Stop(p.signals) // no sends after it returns, so close is safe
		close(p.signals)
		p.signals = nil
	}
	if p.tty < 0 {
		return nil
	}
	tty := p.tty
	p.tty = -1
	if err := setForeground(tty, unix.Getpgrp()); err != nil {
		return fmt.Errorf("giving the terminal back to sfwatch: %w", err)
	}
	return nil
}

// isForeground reports whether fd is our controlling terminal and our
// process group is its foreground group.
func isForeground(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// setForeground makes pgrp the foreground process group of tty. We call it
// from the background, where tcsetpgrp stops the caller with SIGTTOU unless
// that signal is ignored or blocked. It is blocked on this thread only, not
// ignored with signal.Ignore: signal.Reset afterwards leaves SIGTTOU at
// SIG_IGN (checked with Go 1.26), which every later child would inherit, and
// both drop any Notify of SIGTTOU elsewhere in the program.
func setForeground(tty, pgrp int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var block, old unix.Sigset_t
	block.Val[0] = 1 << (unix.SIGTTOU - 1) // sigaddset: signal N is bit N-1
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		return err
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, pgrp)
}

// Resolve checks, with exec.LookPath's rules, that cmd names an executable
// file, so that callers can fail before they create a group or load a tracer.
// Start calls it too.
func Resolve(cmd *exec.Cmd) error {
	if cmd.Err != nil { // exec.Command's own PATH lookup failed
		return classify(cmd.Path, cmd.Err)
	}
	if cmd.Dir != "" {
		// Checked here because a missing Dir fails the child with ENOENT,
		// which would read as "command not found".
		if _, err := os.Stat(cmd.Dir); err != nil {
			return fmt.Errorf("starting %s: working directory: %w", cmd.Path, err)
		}
	}
	path := cmd.Path
	if !filepath.IsAbs(path) {
		// The child resolves a relative path after its chdir(Dir); the
		// slash keeps LookPath from searching PATH.
		path = filepath.Join(cmd.Dir, path)
		if !strings.Contains(path, "/") {
			path = "./" + path
		}
	}
	_, err := exec.LookPath(path)
	return classify(cmd.Path, err)
}

// classify names the command in err and wraps ErrNotFound or ErrNotExecutable
// when err says so. It reads errors of exec.LookPath and of exec.Cmd.Start.
func classify(name string, err error) error {
	var errno syscall.Errno
	switch {
	case err == nil:
		return nil
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	case errors.As(err, &errno) && errno == syscall.EPERM:
		// Not the file's fault (errors.Is(EPERM, fs.ErrPermission) holds):
		// setuid or setgroups for Spec.User was refused.
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: permission denied (%w)", name, ErrNotExecutable)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%s: is a directory (%w)", name, ErrNotExecutable)
	case errors.Is(err, syscall.ENOEXEC):
		return fmt.Errorf("%s: exec format error (%w)", name, ErrNotExecutable)
	}
	return fmt.Errorf("starting %s: %w", name, err)
}

// credential returns who the child runs as, nil for ourselves.
// CheckUser says why Start could not run a child as user (see
// Spec.User), or nil: to find an unknown --user before anything starts.
func CheckUser(user string) error {
	_, err := credential(user)
	return err
}

func credential(name string) (*syscall.Credential, error) {
	if name != "" {
		u, err := lookupUser(name)
		if err != nil {
			return nil, err
		}
		return newCredential(u.Uid, u.Gid, u)
	}
	return nil, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, numErr := strconv.ParseUint(name, 10, 32); numErr == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		// No passwd entry: no name, so no supplementary groups either.
		return &user.User{Uid: name, Gid: name}, nil
	}
	if _, ok := errors.AsType[user.UnknownUserError](err); ok {
		return nil, fmt.Errorf("user %q: unknown user", name)
	}
	return nil, fmt.Errorf("looking up user %q: %w", name, err)
}

// newCredential builds a credential for uid and gid. The supplementary groups
// are u's, or none when u is nil: never ours, which as root would keep root's
// groups.
func newCredential(uid, gid string, u *user.User) (*syscall.Credential, error) {
	uidN, err := strconv.ParseUint(uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user id %q: not a number", uid)
	}
	gidN, err := strconv.ParseUint(gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("group id %q: not a number", gid)
	}
	cred := &syscall.Credential{Uid: uint32(uidN), Gid: uint32(gidN)}
	if u == nil || u.Username == "" {
		return cred, nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("listing the groups of user %s: %w", u.Username, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("listing the groups of user %s: group id %q: not a number", u.Username, id)
		}
		cred.Groups = append(cred.Groups, uint32(g))
	}
	return cred, nil
}
