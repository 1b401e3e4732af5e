// Tests of starting the program: into its group from the first
// instruction, exit statuses, resolving the command, the user it runs as,
// signal forwarding at a terminal and without one, and the descriptors it
// gets. The groups themselves are package cgroup's, tested there.
package child

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/cgroup/cgrouptest"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// helperEnv makes the test binary act as a child program (see TestMain).
const helperEnv = "SFWATCH_CHILD_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "count-signal":
		countSignal(os.Args[1])
		return
	case "tty-run":
		ttyRun()
		return
	}
	// Under sudo every child would run as the sudo user (see Spec.User) and
	// could not execute this test binary: the tests that want that set the
	// variables themselves.
	os.Unsetenv("SUDO_UID")
	os.Unsetenv("SUDO_GID")
	code := m.Run()
	// Groups that cgroup.New made for this process and nothing removed.
	if mount, err := cgroup.Mount(); err == nil {
		left, _ := filepath.Glob(filepath.Join(mount, fmt.Sprintf("sfwatch-%d-*", os.Getpid())))
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: groups left under the cgroup2 mount: %v\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// newGroup is cgroup.New for a test, closed (and checked) at its end.
var newGroup = cgrouptest.New

// run starts s and waits for it, returning its status and stdout.
func run(t *testing.T, s Spec) (int, string) {
	t.Helper()
	var out bytes.Buffer
	s.Cmd.Stdout = &out
	s.Cmd.Stderr = os.Stderr
	p, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// helperCmd runs this test binary as the helper named mode.
func helperCmd(mode string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// countSignal is a child that says "ready fg=BOOL" (whether its process group
// is the foreground of the terminal on stdin), counts the signals named by
// name that arrive within half a second of the first, prints "count=N", and
// dies of that signal.
func countSignal(name string) {
	sig := map[string]syscall.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM}[name]
	c := make(chan os.Signal, 16)
	signal.Notify(c, sig)
	fmt.Printf("ready fg=%v\n", isForeground(0))
	<-c
	n := 1
	timeout := time.After(500 * time.Millisecond)
	for counting := true; counting; {
		select {
		case <-c:
			n++
		case <-timeout:
			counting = false
		}
	}
	fmt.Printf("count=%d\n", n)
	signal.Reset(sig)
	syscall.Kill(os.Getpid(), sig)
	time.Sleep(10 * time.Second)
	os.Exit(99)
}

// ttyRun is sfwatch at a terminal: started as a session leader with the
// terminal on stdin, it runs countSignal INT with ForwardSignals and reports
// whether it got the terminal back.
func ttyRun() {
	g, err := cgroup.New()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	defer g.Close()
	cmd := helperCmd("count-signal", "INT")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	p, err := Start(Spec{Cmd: cmd, Group: g, ForwardSignals: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	code, err := p.Wait()
	fmt.Printf("done code=%d fgback=%v err=%v\n", code, isForeground(0), err)
}

// lines sends each line read from r, without its line end.
func lines(r *os.File) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- strings.TrimRight(s.Text(), "\r")
		}
	}()
	return ch
}

// expectLine waits for a line with prefix in it and returns it from there,
// skipping other lines.
func expectLine(t *testing.T, ch <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before a line %q...", prefix)
			}
			// At a terminal, the echo of ^C may come first.
			if i := strings.Index(line, prefix); i >= 0 {
				return line[i:]
			}
			t.Logf("output: %s", line)
		case <-timeout:
			t.Fatalf("no line %q... within 20s", prefix)
		}
	}
}

// The child is in the group from its first instruction: cat reads its own
// /proc/self/cgroup right after exec.
func TestChildStartsInGroup(t *testing.T) {
	g := newGroup(t)
	code, out := run(t, Spec{Cmd: exec.Command("/bin/cat", "/proc/self/cgroup"), Group: g})
	want := "0::/" + filepath.Base(g.Path)
	if code != 0 || !slices.Contains(strings.Split(out, "\n"), want) {
		t.Errorf("cat /proc/self/cgroup: status %d, output\n%s\nwant a line %q", code, out, want)
	}
}

func TestExitCodes(t *testing.T) {
	g := newGroup(t)
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
	} {
		if code, _ := run(t, Spec{Cmd: exec.Command(tc.args[0], tc.args[1:]...), Group: g}); code != tc.want {
			t.Errorf("%q: status %d, want %d", tc.args, code, tc.want)
		}
	}

	p, err := Start(Spec{Cmd: exec.Command("sleep", "300"), Group: g})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 143 || err != nil {
		t.Errorf("sleep killed by SIGTERM: Wait = %d, %v; want 143", code, err)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want error
		msg  string
	}{
		{"sh", nil, ""},
		{"/bin/sh", nil, ""},
		{"./nosuch", ErrNotFound, "./nosuch: command not found"},
		{"sfwatch-no-such-command", ErrNotFound, "sfwatch-no-such-command: command not found"},
		{"./file.txt", ErrNotExecutable, "./file.txt: permission denied (not executable)"},
		{"./sub", ErrNotExecutable, "./sub: is a directory (not executable)"},
	} {
		cmd := exec.Command(tc.name)
		cmd.Dir = dir
		err := Resolve(cmd)
		if !errors.Is(err, tc.want) || err != nil && err.Error() != tc.msg {
			t.Errorf("Resolve(%s) = %v; want %q", tc.name, err, tc.msg)
		}
		// The standard library's kinds, as os/exec's own errors are.
		if std := map[error]error{ErrNotFound: exec.ErrNotFound, ErrNotExecutable: fs.ErrPermission}[tc.want]; std != nil && !errors.Is(err, std) {
			t.Errorf("Resolve(%s) = %v; want errors.Is %v", tc.name, err, std)
		}
	}
	cmd := exec.Command("true")
	cmd.Dir = filepath.Join(dir, "nosuchdir")
	if err := Resolve(cmd); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve with a missing Dir = %v; want an error about the directory", err)
	}
}

// Start reports what only execve finds out, and what Resolve finds, the same
// way; nothing is left running.
func TestStartErrors(t *testing.T) {
	g := newGroup(t)
	// Not t.TempDir: its parent is private, and nobody must reach the
	// files so that only their own modes say no.
	dir, err := os.MkdirTemp("", "sfwatch-child-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(garbage, []byte("\x00\x01 not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd  *exec.Cmd
		user string
		want error
		msg  string
	}{
		{exec.Command("./nosuch"), "", ErrNotFound, "./nosuch: command not found"},
		{exec.Command(garbage), "", ErrNotExecutable, garbage + ": exec format error (not executable)"},
		{exec.Command(private), "nobody", ErrNotExecutable, private + ": permission denied (not executable)"},
	} {
		_, err := Start(Spec{Cmd: tc.cmd, Group: g, User: tc.user})
		if !errors.Is(err, tc.want) || err.Error() != tc.msg {
			t.Errorf("Start(%s) = %v; want %q", tc.cmd.Path, err, tc.msg)
		}
	}
	_, err = Start(Spec{Cmd: exec.Command("true"), Group: g, User: "sfwatch-nosuch"})
	if want := `user "sfwatch-nosuch": unknown user`; err == nil || err.Error() != want {
		t.Errorf("unknown user: %v; want %q", err, want)
	}
	if pids, err := g.Procs(); err != nil || len(pids) > 0 {
		t.Errorf("Procs = %v, %v; want none", pids, err)
	}
}

// A SIGTERM sent to us reaches the child once, and its status says so.
func TestForwardSignals(t *testing.T) {
	g := newGroup(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := helperCmd("count-signal", "TERM")
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	p, err := Start(Spec{Cmd: cmd, Group: g, ForwardSignals: true})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := lines(r)
	expectLine(t, out, "ready")
	// Safe only while forwarding is on: signal.Notify keeps it from
	// killing the test.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if line := expectLine(t, out, "count="); line != "count=1" {
		t.Errorf("child got %s SIGTERMs, want 1", strings.TrimPrefix(line, "count="))
	}
	if code, err := p.Wait(); code != 143 || err != nil {
		t.Errorf("Wait = %d, %v; want 143", code, err)
	}
}

// At a terminal the child's process group gets the terminal: Ctrl-C reaches
// the child alone, once, and the terminal comes back after it.
func TestTerminalForeground(t *testing.T) {
	testenv.RequirePrivileged(t)
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	sfwatch := helperCmd("tty-run")
	sfwatch.Stdin, sfwatch.Stdout, sfwatch.Stderr = tty, tty, tty
	sfwatch.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = sfwatch.Start()
	tty.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sfwatch.Wait()

	out := lines(master)
	if line := expectLine(t, out, "ready"); line != "ready fg=true" {
		t.Errorf("child: %q, want it in the foreground", line)
	}
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if line := expectLine(t, out, "count="); line != "count=1" {
		t.Errorf("child got %s SIGINTs, want 1", strings.TrimPrefix(line, "count="))
	}
	if line, want := expectLine(t, out, "done"), "done code=130 fgback=true err=<nil>"; line != want {
		t.Errorf("sfwatch: %q, want %q", line, want)
	}
}

func TestUser(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name, user, sudoUID, want string
	}{
		{"sudo: our own, as strace", "", "65534", "0 0 0"},
		{"name", "nobody", "", "65534 65534 65534"},
		{"uid", "65534", "", "65534 65534 65534"},
		{"uid without passwd entry", "4000000", "", "4000000 4000000 4000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sudoUID != "" {
				t.Setenv("SUDO_UID", tc.sudoUID)
				t.Setenv("SUDO_GID", tc.sudoUID)
			}
			g := newGroup(t)
			cmd := exec.Command("sh", "-c", "echo $(id -u) $(id -g) $(id -G)")
			code, out := run(t, Spec{Cmd: cmd, Group: g, User: tc.user})
			if code != 0 || strings.TrimSpace(out) != tc.want {
				t.Errorf("uid gid groups: status %d, %q; want %q", code, out, tc.want)
			}
		})
	}
}

// The child gets no file that sfwatch opened: not the group directory, not
// any other. What the test process itself inherited without close-on-exec
// (from the shell that started it) passes through, as with any exec.
func TestNoFdLeak(t *testing.T) {
	g := newGroup(t)
	extra, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	want := inheritedFds(t)
	code, out := run(t, Spec{Cmd: exec.Command("ls", "/proc/self/fd"), Group: g})
	// ls's own listing takes the lowest free number.
	for fd := 0; ; fd++ {
		if !slices.Contains(want, fd) {
			want = append(want, fd)
			break
		}
	}
	got := atois(t, strings.Fields(out))
	slices.Sort(got)
	slices.Sort(want)
	if code != 0 || !slices.Equal(got, want) {
		t.Errorf("child's fds: %v (status %d), want %v (ours: extra file %d, group dir %d)",
			got, code, want, extra.Fd(), g.FD())
	}
}

// inheritedFds returns 0, 1, 2 and the fds of this process that a child
// inherits: those without close-on-exec.
func inheritedFds(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := []int{0, 1, 2}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if fd > 2 && err == nil && flags&unix.FD_CLOEXEC == 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

func atois(t *testing.T, ss []string) []int {
	t.Helper()
	var ns []int
	for _, s := range ss {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		ns = append(ns, n)
	}
	return ns
}

// TestSysProcAttrKept: what the caller set in SysProcAttr (here a process
// group of the child's own, and a parent death signal) is kept; the child
// still starts in the group. Without Setpgid it shares ours.
func TestSysProcAttrKept(t *testing.T) {
	g := newGroup(t)
	for _, tc := range []struct {
		name    string
		attr    *syscall.SysProcAttr
		ownPgrp bool
	}{
		{"none", nil, false},
		{"setpgid and pdeathsig", &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", "cut -d' ' -f1,5 /proc/self/stat; cat /proc/self/cgroup")
			cmd.SysProcAttr = tc.attr
			code, out := run(t, Spec{Cmd: cmd, Group: g})
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || len(lines) < 2 {
				t.Fatalf("status %d, output %q", code, out)
			}
			// cut runs in its own process, whose pgrp is the shell's.
			f := strings.Fields(lines[0])
			pgrp, _ := strconv.Atoi(f[1])
			if own := pgrp != syscall.Getpgrp(); own != tc.ownPgrp {
				t.Errorf("child's process group %d, ours %d: own group %v, want %v", pgrp, syscall.Getpgrp(), own, tc.ownPgrp)
			}
			if !strings.Contains(out, g.Rel) {
				t.Errorf("child not in %s:\n%s", g.Rel, out)
			}
			if tc.attr != nil && (tc.attr.UseCgroupFD || tc.attr.CgroupFD != 0) {
				t.Errorf("the caller's SysProcAttr was changed: %+v", tc.attr)
			}
		})
	}
}
