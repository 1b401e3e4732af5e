package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/cgroup/cgrouptest"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// childEnv makes the test binary a workload: "ok=N,ebadf=N,espipe=N,einval=N"
// sendfile calls, each of 4096 bytes or failing with that errno.
const childEnv = "SFWATCH_DAEMON_TEST_CALLS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := calls(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// calls makes the sendfile calls spec names, from this thread.
func calls(spec string) error {
	in, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	dir, err := os.Open("/")
	if err != nil {
		return err
	}
	defer dir.Close()
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("bad spec %q", spec)
		}
		for range n {
			var off int64
			var got int
			var want error
			switch k {
			case "ok":
				got, err = unix.Sendfile(int(out.Fd()), int(in.Fd()), &off, 4096)
				if err == nil && got != 4096 {
					return fmt.Errorf("sendfile = %d, want 4096", got)
				}
			case "ebadf":
				_, err = unix.Sendfile(999, int(in.Fd()), &off, 4096)
				want = syscall.EBADF
			case "espipe":
				_, err = unix.Sendfile(int(out.Fd()), p[0], &off, 10)
				want = syscall.ESPIPE
			case "einval":
				_, err = unix.Sendfile(int(out.Fd()), int(dir.Fd()), nil, 10)
				want = syscall.EINVAL
			default:
				return fmt.Errorf("bad spec %q", spec)
			}
			if err != want {
				return fmt.Errorf("%s: sendfile: %v, want %v", k, err, want)
			}
		}
	}
	return nil
}

// parent creates an owned group for a test's groups: removed, with all
// below it and whatever runs there, at the end.
var parent = cgrouptest.New

// mkdir creates the group at rel below g (and the groups above it).
func mkdir(t *testing.T, g *cgroup.Group, rel string) string {
	t.Helper()
	path := filepath.Join(g.Path, rel)
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// runIn runs the workload spec in the group at path, to its end.
func runIn(t *testing.T, path, spec string) {
	t.Helper()
	dir, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+spec)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("workload %s in %s: %v\n%s", spec, path, err, out)
	}
}

func start(t *testing.T, cfg Config) *Daemon {
	t.Helper()
	testenv.RequirePrivileged(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	cfg.Log = &lockedWriter{b: &log}
	d, err := Start(mount, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		t.Logf("daemon log:\n%s", log.String())
	})
	return d
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func snapshot(t *testing.T, d *Daemon) map[string]Totals {
	t.Helper()
	s, err := d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// want checks one path's calls, bytes and errnos.
func want(t *testing.T, s map[string]Totals, path string, ok uint64, errnos map[syscall.Errno]uint64) {
	t.Helper()
	got, found := s[path]
	if !found {
		t.Errorf("%s: no totals; have %v", path, keys(s))
		return
	}
	var errs uint64
	for e, n := range errnos {
		errs += n
		if got.Errno(e) != n {
			t.Errorf("%s: %d calls failed with %v, want %d", path, got.Errno(e), e, n)
		}
	}
	if got.Calls() != ok+errs {
		t.Errorf("%s: %d calls, want %d", path, got.Calls(), ok+errs)
	}
	if b := got.Get(loader.SfwatchCounterCOUNTER_BYTES); b != 4096*ok {
		t.Errorf("%s: %d bytes, want %d", path, b, 4096*ok)
	}
	if e := got.Get(loader.SfwatchCounterCOUNTER_ERRORS); e != errs {
		t.Errorf("%s: %d errors, want %d", path, e, errs)
	}
}

func keys(s map[string]Totals) []string {
	var k []string
	for p := range s {
		k = append(k, p)
	}
	return k
}

// TestSiblingGroups: two sibling groups under a watched parent, with
// different workloads, each get exactly their calls, bytes and errnos; a
// process outside the watched subtree is counted nowhere.
func TestSiblingGroups(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := parent(t)
	a := mkdir(t, p, "a")
	d := start(t, Config{Watch: []string{p.Rel}})
	b := mkdir(t, p, "b") // created after the daemon started
	outside := parent(t)

	runIn(t, a, "ok=5,ebadf=2")
	runIn(t, b, "ok=3,espipe=1,einval=4")
	runIn(t, outside.Path, "ok=7,ebadf=1")

	s := snapshot(t, d)
	want(t, s, p.Rel+"/a", 5, map[syscall.Errno]uint64{syscall.EBADF: 2})
	want(t, s, p.Rel+"/b", 3, map[syscall.Errno]uint64{syscall.ESPIPE: 1, syscall.EINVAL: 4})
	var total uint64
	for path, tot := range s {
		total += tot.Calls()
		if strings.HasPrefix(path, outside.Rel) {
			t.Errorf("the unwatched group %s has totals", path)
		}
	}
	if total != 15 {
		t.Errorf("%d calls in all, want 15 (the unwatched group's 8 counted somewhere?)", total)
	}
}

// TestRecreatedGroup: a group removed and re-created at the same path goes
// on counting from where it was, also once the old row is given back.
func TestRecreatedGroup(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := parent(t)
	d := start(t, Config{Watch: []string{p.Rel}})
	x := mkdir(t, p, "x")
	runIn(t, x, "ok=3")
	want(t, snapshot(t, d), p.Rel+"/x", 3, nil)
	if err := os.Remove(x); err != nil {
		t.Fatal(err)
	}
	// Nothing lost between the last read and the removal.
	want(t, snapshot(t, d), p.Rel+"/x", 3, nil)
	mkdir(t, p, "x")
	runIn(t, x, "ok=4,ebadf=1")
	want(t, snapshot(t, d), p.Rel+"/x", 7, map[syscall.Errno]uint64{syscall.EBADF: 1})
	time.Sleep(rowGrace + 2*tick) // the first row is given back
	want(t, snapshot(t, d), p.Rel+"/x", 7, map[syscall.Errno]uint64{syscall.EBADF: 1})
	d.mu.Lock()
	rows := len(d.rows)
	d.mu.Unlock()
	if rows != 1 {
		t.Errorf("%d rows named, want 1 (the re-created group's)", rows)
	}
}

// TestWatchNotYetExisting: a watched path that does not exist at start is
// watched from its creation, and again after it is removed and re-created.
func TestWatchNotYetExisting(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := parent(t)
	d := start(t, Config{Watch: []string{p.Rel + "/later"}})
	created := time.Now()
	later := mkdir(t, p, "later/leaf")
	// The daemon is woken by the group's creation: give it a moment.
	deadline := time.Now().Add(time.Second)
	for {
		d.mu.Lock()
		id := d.watches[0].id
		d.mu.Unlock()
		if id != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the created path was not watched within a second")
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Logf("watched %v after the mkdir began", time.Since(created))
	runIn(t, later, "ok=2")
	want(t, snapshot(t, d), p.Rel+"/later/leaf", 2, nil)
}

// TestGroupDepth: --group-depth 1 counts every group below a child of the
// watched path in that child.
func TestGroupDepth(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := parent(t)
	d := start(t, Config{Watch: []string{p.Rel}, GroupDepth: 1})
	runIn(t, mkdir(t, p, "svc/a/b"), "ok=2")
	runIn(t, mkdir(t, p, "svc/c"), "ok=1")
	runIn(t, p.Path, "ok=1") // shallower than the depth: its own group
	s := snapshot(t, d)
	want(t, s, p.Rel+"/svc", 3, nil)
	want(t, s, p.Rel, 1, nil)
}
