// Tests of the groups themselves: finding the cgroup2 mount, creating,
// opening and naming groups, the sweep of stale groups, Kill and Close.
// Starting a program in a group is package child's, tested there.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if left := ourGroups(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: groups left under the cgroup2 mount: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// ourGroups lists the groups named for this process that exist.
func ourGroups() []string {
	mount, err := Mount()
	if err != nil {
		return nil
	}
	left, _ := filepath.Glob(filepath.Join(mount, fmt.Sprintf("%s%d-*", groupPrefix, os.Getpid())))
	return left
}

// newGroup is New for a test, closed (and checked) at its end.
func newGroup(t *testing.T) *Group {
	t.Helper()
	testenv.RequirePrivileged(t)
	g, err := New()
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

// startIn starts cmd inside g from its first instruction, as child.Start
// does (this package cannot import child, which imports it).
func startIn(t *testing.T, g *Group, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
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

func TestParseMount(t *testing.T) {
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
	for _, tc := range []struct{ name, in, want, options string }{
		{"hybrid", hybrid, "/sys/fs/cgroup/unified", "rw nsdelegate"},
		{"pure v2", pure, "/sys/fs/cgroup", "rw nsdelegate memory_recursiveprot"},
		{"no optional fields", here, "/sys/fs/cgroup/unified", "rw"},
		{"escaped", escaped, `/mnt/my cgroup\x`, "rw"},
	} {
		got, options, err := parseMount(strings.NewReader(tc.in))
		if err != nil || got != tc.want || strings.Join(options, " ") != tc.options {
			t.Errorf("%s: got %q, %q, %v; want %q, %q", tc.name, got, options, err, tc.want, tc.options)
		}
	}
	if got, _, err := parseMount(strings.NewReader(none)); err == nil {
		t.Errorf("v1 only: got %q, want an error", got)
	}
}

func TestMount(t *testing.T) {
	mount, err := Mount()
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

func TestNew(t *testing.T) {
	g := newGroup(t)
	mount, err := Mount()
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

func TestOpenAndOfPID(t *testing.T) {
	g := newGroup(t)
	cmd := exec.Command("sleep", "300")
	startIn(t, g, cmd)
	defer cmd.Wait()
	defer g.Kill()
	pid := cmd.Process.Pid

	byPID, err := OfPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer byPID.Close()
	if byPID.ID != g.ID || byPID.Level != 1 || byPID.Path != g.Path {
		t.Errorf("OfPID = %+v, want %+v", byPID, g)
	}
	if pids, err := g.Procs(); err != nil || !slices.Equal(pids, []int{pid}) {
		t.Errorf("Procs = %v, %v; want [%d]", pids, err, pid)
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
		o, err := Open(path)
		if err != nil {
			t.Errorf("Open(%q): %v", path, err)
			continue
		}
		if o.Level != level {
			t.Errorf("Open(%q).Level = %d, want %d", path, o.Level, level)
		}
		if level == 1 && o.ID != g.ID {
			t.Errorf("Open(%q).ID = %d, want %d", path, o.ID, g.ID)
		}
		if err := o.Close(); err != nil {
			t.Error(err)
		}
	}
	// Closing what Open returned removed nothing.
	if _, err := os.Stat(filepath.Join(g.Path, "sub")); err != nil {
		t.Error(err)
	}
	if _, err := Open("../etc"); err == nil {
		t.Error("Open(../etc) succeeded, want an error")
	}
}

// A daemon that double-forks into a session of its own stays in the group
// after the child exits, and Close kills it.
func TestDaemonKilledByClose(t *testing.T) {
	g := newGroup(t)
	cmd := exec.Command("sh", "-c", `setsid sh -c "sleep 300" & exit 0`)
	startIn(t, g, cmd)
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", cmd.ProcessState.ExitCode(), err)
	}
	pids, err := g.Procs()
	if err != nil || len(pids) == 0 {
		t.Fatalf("Procs after the child exited = %v, %v; want the daemon", pids, err)
	}
	for _, pid := range pids {
		o, err := OfPID(pid)
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
	cmd := exec.Command("sh", "-c", `setsid sh -c "sleep 300" & sleep 300 & exec sleep 300`)
	startIn(t, g, cmd)
	defer cmd.Wait()
	var pids []int
	var err error
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
	testenv.RequirePrivileged(t)
	mount, err := Mount()
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
	// New between its mkdir and its open), and an earlier version's
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
// concurrent New.
func TestNewConcurrent(t *testing.T) {
	testenv.RequirePrivileged(t)
	groups := make([]*Group, 8)
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i := range groups {
		wg.Go(func() { groups[i], errs[i] = New() })
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

// New takes no lock that another user can hold: with a user's flock
// on the cgroup2 root (which anyone can open), it still returns at once.
// Before, it waited for that lock for as long as the user liked.
func TestNewIgnoresUserLocks(t *testing.T) {
	testenv.RequirePrivileged(t)
	mount, err := Mount()
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
			g, err := New()
			if err != nil {
				t.Error(err)
			}
			created <- g
		}()
		var g *Group
		select {
		case g = <-created:
		case <-time.After(5 * time.Second):
			t.Errorf("flock %s on %s by uid 65534: New still waiting after 5s", mode, mount)
		}
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) // flock and its sleep
		holder.Wait()
		if g == nil {
			// A New that waited for the lock gets it now.
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
