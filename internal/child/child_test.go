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
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	if left := ourGroups(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: groups left under the cgroup2 mount: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// ourGroups lists the groups named for this process that exist.
func ourGroups() []string {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil
	}
	left, _ := filepath.Glob(filepath.Join(mount, fmt.Sprintf("%s%d-*", groupPrefix, os.Getpid())))
	return left
}

func needsRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and starts children in them")
	}
}

// newGroup is NewGroup for a test, closed (and checked) at its end.
func newGroup(t *testing.T) *Group {
	t.Helper()
	needsRoot(t)
	g, err := NewGroup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}

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
	g, err := NewGroup()
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

// gone reports whether pid has exited (a zombie counts as exited).
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := bytes.Cut(stat, []byte(") "))
	return bytes.HasPrefix(rest, []byte("Z"))
}

func TestParseCgroup2Mount(t *testing.T) {
	const (
		hybrid = `25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
`
		pure = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
		here    = "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
		escaped = "50 1 0:40 / /mnt/my\\040cgroup\\134x rw - cgroup2 none rw\n"
		none    = "22 1 0:21 / /sys rw - sysfs sysfs rw\n27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
	)
	for _, tc := range []struct{ name, in, want string }{
		{"hybrid", hybrid, "/sys/fs/cgroup/unified"},
		{"pure v2", pure, "/sys/fs/cgroup"},
		{"no optional fields", here, "/sys/fs/cgroup/unified"},
		{"escaped", escaped, `/mnt/my cgroup\x`},
	} {
		got, err := parseCgroup2Mount(strings.NewReader(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if got, err := parseCgroup2Mount(strings.NewReader(none)); err == nil {
		t.Errorf("v1 only: got %q, want an error", got)
	}
}

func TestCgroup2Mount(t *testing.T) {
	mount, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(mount, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Errorf("%s: file system type %#x, want cgroup2 (%#x)", mount, fs.Type, unix.CGROUP2_SUPER_MAGIC)
	}
}

func TestGroupOwner(t *testing.T) {
	type owner struct {
		pid   int
		start uint64
	}
	for name, want := range map[string]owner{
		"sfwatch-123-4567-0":   {123, 4567},
		"sfwatch-1-2-42":       {1, 2},
		"sfwatch-123-0":        {123, 0}, // an earlier version's name
		"sfwatch-1-42":         {1, 0},
		"sfwatch-123":          {},
		"sfwatch-x-0":          {},
		"sfwatch-0-0":          {},
		"sfwatch-0-1-0":        {},
		"sfwatch-12-a":         {},
		"sfwatch-12-1-a":       {},
		"system.slice":         {},
		"sfwatchd-1-0":         {},
		"sfwatch--5-0":         {},
		"sfwatch-123-4-0-sub":  {},
		"sfwatch-123-4567-0-1": {},
	} {
		pid, start, ok := groupOwner(name)
		if pid != want.pid || start != want.start || ok != (want.pid != 0) {
			t.Errorf("groupOwner(%q) = %d, %d, %v; want %d, %d", name, pid, start, ok, want.pid, want.start)
		}
	}
}

func TestProcStart(t *testing.T) {
	a, err := procStart(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("procStart(self) = %d, %v", a, err)
	}
	// A process with a ')' and spaces in its name: the parse must not
	// take the command name's words for fields.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a) 1 2 (b")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	b, err := procStart(cmd.Process.Pid)
	if err != nil || b < a {
		t.Errorf("procStart(child) = %d, %v; want at least ours, %d", b, err, a)
	}
	if _, err := procStart(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("procStart(no such pid): %v, want ErrNotExist", err)
	}
}

func TestNewGroup(t *testing.T) {
	g := newGroup(t)
	mount, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(g.Path) != mount || !strings.HasPrefix(filepath.Base(g.Path), "sfwatch-") {
		t.Errorf("Path = %s, want %s/sfwatch-*", g.Path, mount)
	}
	if g.Level != 1 {
		t.Errorf("Level = %d, want 1", g.Level)
	}
	var st unix.Stat_t
	if err := unix.Stat(g.Path, &st); err != nil {
		t.Fatal(err)
	}
	if g.ID != st.Ino {
		t.Errorf("ID = %d, want the inode %d", g.ID, st.Ino)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close, stat %s: %v; want it removed", g.Path, err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
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

func TestOpenGroupAndGroupOfPID(t *testing.T) {
	g := newGroup(t)
	p, err := Start(Spec{Cmd: exec.Command("sleep", "300"), Group: g})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wait()
	defer g.Kill()

	byPID, err := GroupOfPID(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	defer byPID.Close()
	if byPID.ID != g.ID || byPID.Level != 1 || byPID.Path != g.Path {
		t.Errorf("GroupOfPID = %+v, want %+v", byPID, g)
	}
	if pids, err := g.Procs(); err != nil || !slices.Equal(pids, []int{p.Pid()}) {
		t.Errorf("Procs = %v, %v; want [%d]", pids, err, p.Pid())
	}

	name := filepath.Base(g.Path)
	if err := os.Mkdir(filepath.Join(g.Path, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for path, level := range map[string]uint32{
		g.Path:              1,
		name:                1,
		"/" + name:          1,
		name + "/sub":       2,
		"/" + name + "/sub": 2,
		g.Path + "/sub":     2,
		"/":                 0,
	} {
		o, err := OpenGroup(path)
		if err != nil {
			t.Errorf("OpenGroup(%q): %v", path, err)
			continue
		}
		if o.Level != level {
			t.Errorf("OpenGroup(%q).Level = %d, want %d", path, o.Level, level)
		}
		if level == 1 && o.ID != g.ID {
			t.Errorf("OpenGroup(%q).ID = %d, want %d", path, o.ID, g.ID)
		}
		if err := o.Close(); err != nil {
			t.Error(err)
		}
	}
	// Closing what OpenGroup returned removed nothing.
	if _, err := os.Stat(filepath.Join(g.Path, "sub")); err != nil {
		t.Error(err)
	}
	if _, err := OpenGroup("../etc"); err == nil {
		t.Error("OpenGroup(../etc) succeeded, want an error")
	}
}

// A daemon that double-forks into a session of its own stays in the group
// after the child exits, and Close kills it.
func TestDaemonKilledByClose(t *testing.T) {
	g := newGroup(t)
	cmd := exec.Command("sh", "-c", `setsid sh -c "sleep 300" & exit 0`)
	p, err := Start(Spec{Cmd: cmd, Group: g})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", code, err)
	}
	pids, err := g.Procs()
	if err != nil || len(pids) == 0 {
		t.Fatalf("Procs after the child exited = %v, %v; want the daemon", pids, err)
	}
	for _, pid := range pids {
		o, err := GroupOfPID(pid)
		if err != nil {
			t.Fatal(err)
		}
		if o.ID != g.ID {
			t.Errorf("pid %d is in %s, want %s", pid, o.Path, g.Path)
		}
		o.Close()
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("pid %d still runs after Close", pid)
		}
	}
	if left := ourGroups(); len(left) > 0 {
		t.Errorf("groups left: %v", left)
	}
}

// Without cgroup.kill (kernels before 5.14, forced here), Close still kills
// the child, its forks and a daemon, and removes the group.
func TestCloseWithoutCgroupKill(t *testing.T) {
	forceKillFallback = true
	defer func() { forceKillFallback = false }()
	g := newGroup(t)
	if g.HasCgroupKill() {
		t.Fatal("HasCgroupKill with the fallback forced")
	}
	p, err := Start(Spec{Cmd: exec.Command("sh", "-c", `setsid sh -c "sleep 300" & sleep 300 & exec sleep 300`), Group: g})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wait()
	var pids []int
	for deadline := time.Now().Add(10 * time.Second); len(pids) < 3; time.Sleep(10 * time.Millisecond) {
		if pids, err = g.Procs(); err != nil || time.Now().After(deadline) {
			t.Fatalf("Procs = %v, %v; want 3 sleeps", pids, err)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("group %s still exists after Close: %v", g.Path, err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("pid %d still runs after Close", pid)
		}
	}
}

func TestStaleGroupRemoved(t *testing.T) {
	needsRoot(t)
	mount, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	// A pid that no longer runs: a crashed sfwatch.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(mount, fmt.Sprintf("sfwatch-%d-1-0", done.Process.Pid))
	// An earlier version's name, for a pid that no longer runs.
	staleOld := filepath.Join(mount, fmt.Sprintf("sfwatch-%d-0", done.Process.Pid))
	// A group named for a live pid that started at another time: what a
	// crashed sfwatch's pid reused by another program looks like.
	start, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	reused := filepath.Join(mount, fmt.Sprintf("sfwatch-%d-%d-%d", os.Getpid(), start-1, 1<<40))
	// A group of a live owner that does not hold it open yet (a concurrent
	// NewGroup between its mkdir and its open), and an earlier version's
	// name for a live pid: both stay.
	live := filepath.Join(mount, fmt.Sprintf("sfwatch-%d-%d-%d", os.Getpid(), start, 1<<40))
	liveOld := filepath.Join(mount, fmt.Sprintf("sfwatch-%d-%d", os.Getpid(), 1<<40))
	for _, dir := range []string{stale, staleOld, reused, live, liveOld} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := os.Stat(dir); err == nil {
				killAndRemove(dir)
			}
		})
	}
	if err := os.Mkdir(stale+"/inner", 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale+"/inner/cgroup.procs", fmt.Append(nil, sleeper.Process.Pid), 0); err != nil {
		t.Fatal(err)
	}

	newGroup(t)
	for _, dir := range []string{stale, staleOld, reused} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v; want it removed", dir, err)
		}
	}
	for _, dir := range []string{live, liveOld} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the group of a live owner was swept: %v", err)
		}
	}
	sleeper.Wait()
	if ws := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the process in the stale group ended with %v, want killed", sleeper.ProcessState)
	}
}

// Groups in use, by this process or another, survive the sweep of a
// concurrent NewGroup.
func TestNewGroupConcurrent(t *testing.T) {
	needsRoot(t)
	groups := make([]*Group, 8)
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i := range groups {
		wg.Go(func() { groups[i], errs[i] = NewGroup() })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, g := range groups {
		if errs[i] != nil {
			t.Error(errs[i])
			continue
		}
		defer g.Close()
		if seen[g.Path] {
			t.Errorf("%s created twice", g.Path)
		}
		seen[g.Path] = true
	}
	for path := range seen {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("a live group was removed: %v", err)
		}
	}
}

// NewGroup takes no lock that another user can hold: with a user's flock
// on the cgroup2 root (which anyone can open), it still returns at once.
// Before, it waited for that lock for as long as the user liked.
func TestNewGroupIgnoresUserLocks(t *testing.T) {
	needsRoot(t)
	mount, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Fatalf("needs flock (util-linux): %v", err)
	}
	for _, mode := range []string{"-s", "-x"} {
		// -o: sleep does not inherit the lock, so killing flock releases it.
		holder := exec.Command(flock, "-o", mode, mount, "sleep", "60")
		holder.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		waitLocked(t, mount)
		created := make(chan *Group, 1)
		go func() {
			g, err := NewGroup()
			if err != nil {
				t.Error(err)
			}
			created <- g
		}()
		var g *Group
		select {
		case g = <-created:
		case <-time.After(5 * time.Second):
			t.Errorf("flock %s on %s by uid 65534: NewGroup still waiting after 5s", mode, mount)
		}
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) // flock and its sleep
		holder.Wait()
		if g == nil {
			// A NewGroup that waited for the lock gets it now.
			g = <-created
		}
		if g != nil {
			g.Close()
		}
	}
}

// waitLocked waits (at most 10 s) until someone holds a flock on path.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == unix.EWOULDBLOCK {
			return
		}
		if err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody took a lock on %s", path)
		}
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
	needsRoot(t)
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
	needsRoot(t)
	for _, tc := range []struct {
		name, user, sudoUID, want string
	}{
		{"sudo", "", "65534", "65534 65534 65534"},
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
			got, code, want, extra.Fd(), g.dir.Fd())
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

// TestGroupRel: a group path is below the cgroup2 mount, absolute or
// relative to it, or as /proc/PID/cgroup shows it; ".." that leaves the
// mount is refused.
func TestGroupRel(t *testing.T) {
	const mount = "/sys/fs/cgroup"
	for path, want := range map[string]string{
		"/sys/fs/cgroup":                     ".",
		"/sys/fs/cgroup/a/b":                 "a/b",
		"/sys/fs/cgroup/a/../b":              "b",
		"/system.slice/x.service":            "system.slice/x.service",
		"/":                                  ".",
		"a/b":                                "a/b",
		"/sys/fs/cgroup/a/../..":             "",
		"/sys/fs/cgroup/../../../etc":        "",
		"/sys/fs/cgroup/a/../../cgroup-evil": "",
		"/../etc":                            "",
		"../etc":                             "",
		"a/../../etc":                        "",
	} {
		got, err := groupRel(mount, path)
		if want == "" {
			if err == nil || !strings.Contains(err.Error(), "leaves the cgroup2 mount /sys/fs/cgroup") {
				t.Errorf("groupRel(%q) = %q, %v; want an error saying it leaves the mount", path, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("groupRel(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
}
