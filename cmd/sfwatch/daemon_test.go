package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestDaemonBadInput: a --watch path out of the cgroup2 mount or naming a
// file, a malformed or missing --config, bad numbers: exit 2 with one line,
// before anything is loaded or locked.
func TestDaemonBadInput(t *testing.T) {
	mount, err := cgroup.Mount()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	lock := filepath.Join(dir, "run", "daemon.lock")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("watch /a\nwatch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--watch", "/../outside"},
		{"--watch", filepath.Join(mount, "cgroup.procs")},
		{"--watch", filepath.Dir(mount)}, // exists, but above the mount
		{"--config", bad},
		{"--config", filepath.Join(dir, "missing.conf")},
		{"--config", "/dev/zero"},
		{"--max-groups", "0"},
		{"--group-depth", "-1"},
		{"--retention", "0s"},
		{"--watch", "/x", "extra"},
		{"--format", "json"},
		{"--sample", "2"},
		{"--events", filepath.Join(dir, "events"), "--format", "yaml"},
		{"--events", filepath.Join(dir, "events"), "--sample", "0"},
		{"--events", filepath.Join(dir, "events"), "--ringbuf-size", "1000"},
		{"--events", filepath.Join(dir, "missing", "events")},
	} {
		r := sfwatch(t, nil, append([]string{"daemon", "--lock", lock, "--socket", socketBeside(lock), "--favordynmods=false"}, args...)...)
		if r.code != exitUsage {
			t.Errorf("daemon %q: exit %d, want %d; stderr:\n%s", args, r.code, exitUsage, r.stderr)
		}
		if n := len(lines(r.stderr)); n != 1 {
			t.Errorf("daemon %q: %d lines on stderr, want 1:\n%s", args, n, r.stderr)
		}
		if _, err := os.Stat(lock); err == nil {
			t.Fatalf("daemon %q: took its lock before refusing", args)
		}
	}
}

// daemonProc is a running sfwatch daemon.
type daemonProc struct {
	*started
	lock string
}

// socketBeside is a test daemon's socket: next to its lock, never the
// machine's (a later --socket in a test's flags wins).
func socketBeside(lock string) string { return filepath.Join(filepath.Dir(lock), "sfwatch.sock") }

// startDaemon starts a daemon with args and waits until it watches.
func startDaemon(t *testing.T, lock string, args ...string) *daemonProc {
	t.Helper()
	// The mount is left as it is: a daemon killed with SIGKILL (some
	// tests do) cannot put it back. TestDaemonFavorDynmods turns it on.
	s := startSfwatch(t, append([]string{"daemon", "--lock", lock, "--socket", socketBeside(lock), "--favordynmods=false"}, args...)...)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(s.stderr.String(), " watching "); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("the daemon did not start; stderr:\n%s", s.stderr.String())
		}
	}
	return &daemonProc{s, lock}
}

// stop sends sig and waits for the daemon to exit, leaving nothing behind.
func (d *daemonProc) stop(t *testing.T, sig syscall.Signal) result {
	t.Helper()
	d.cmd.Process.Signal(sig)
	return d.wait(t)
}

// loopIn runs the loop workload (one thread, n calls) in the group at path.
func loopIn(t *testing.T, path string, n int) {
	t.Helper()
	dir, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := exec.Command(os.Args[0], "loop", "1", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), workloadEnv()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loop in %s: %v\n%s", path, err, out)
	}
}

// ownedGroup is a new group below the cgroup2 root, removed at the end.
func ownedGroup(t *testing.T) *cgroup.Group {
	t.Helper()
	g, err := cgroup.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestDaemonEndToEnd: two sibling groups under a watched parent get
// exactly their calls and bytes in /metrics, a process outside is counted
// nowhere; SIGHUP adds a path from --config; a second daemon is refused;
// SIGTERM detaches and prints the accounting line.
func TestDaemonEndToEnd(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := ownedGroup(t)
	outside := ownedGroup(t)
	for _, sub := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(p.Path, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "daemon.conf")
	if err := os.WriteFile(conf, []byte("# the test's groups\nwatch "+p.Rel+"/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "daemon.lock")
	addr := pmAddr(t)
	d := startDaemon(t, lock, "--watch", p.Rel+"/a", "--config", conf, "--metrics-addr", addr)

	// A second daemon is refused, naming the first.
	second := sfwatch(t, nil, "daemon", "--lock", lock, "--socket", socketBeside(lock), "--favordynmods=false", "--watch", p.Rel)
	if second.code != exitFailed || len(lines(second.stderr)) != 1 ||
		!strings.Contains(second.stderr, "pid "+strconv.Itoa(d.cmd.Process.Pid)) {
		t.Errorf("second daemon: exit %d, stderr:\n%s\nwant %d and one line naming pid %d", second.code, second.stderr, exitFailed, d.cmd.Process.Pid)
	}

	loopIn(t, filepath.Join(p.Path, "a"), 10)
	loopIn(t, filepath.Join(p.Path, "b"), 25)
	loopIn(t, filepath.Join(p.Path, "c"), 7) // not watched yet
	loopIn(t, outside.Path, 5)

	client := &http.Client{Timeout: 10 * time.Second}
	url := "http://" + addr + "/metrics"
	m := pmScrape(t, client, url)
	for _, g := range []struct {
		sub string
		n   int
	}{{"a", 10}, {"b", 25}} {
		want := loopTotals(1, g.n, true)
		path := p.Rel + "/" + g.sub
		if got := m.value(t, "sfwatch_sendfile_calls_total", "cgroup", path); got != want.calls {
			t.Errorf("%s: %d calls, want %d", path, got, want.calls)
		}
		if got := m.value(t, "sfwatch_sendfile_calls_total", "cgroup", path, "result", "eof"); got != want.eof {
			t.Errorf("%s: %d eof, want %d", path, got, want.eof)
		}
		if got := m.value(t, "sfwatch_sendfile_bytes_total", "cgroup", path); got != want.bytes {
			t.Errorf("%s: %d bytes, want %d", path, got, want.bytes)
		}
		if got := m.value(t, "sfwatch_sendfile_duration_seconds", "cgroup", path); got != want.calls {
			t.Errorf("%s: histogram count %d, want %d", path, got, want.calls)
		}
	}
	for _, f := range m {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "cgroup" && (strings.HasPrefix(l.GetValue(), outside.Rel) || l.GetValue() == p.Rel+"/c") {
					t.Errorf("%s has a series for the unwatched %s", f.GetName(), l.GetValue())
				}
			}
		}
	}
	if got := m.value(t, "sfwatch_watched_groups"); got != 2 {
		t.Errorf("sfwatch_watched_groups %d, want 2", got)
	}

	// SIGHUP: c, added to the config, is watched from then on.
	if err := os.WriteFile(conf, []byte("watch "+p.Rel+"/b\nwatch "+p.Rel+"/c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.stderr.String(), "SIGHUP: watching 3 paths"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no SIGHUP line; stderr:\n%s", d.stderr.String())
		}
	}
	loopIn(t, filepath.Join(p.Path, "c"), 3)
	m = pmScrape(t, client, url)
	if got := m.value(t, "sfwatch_sendfile_calls_total", "cgroup", p.Rel+"/c"); got != 3 {
		t.Errorf("%s/c after SIGHUP: %d calls, want 3", p.Rel, got)
	}

	r := d.stop(t, syscall.SIGTERM)
	if r.code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr:\n%s", r.code, r.stderr)
	}
	last := lines(r.stderr)[len(lines(r.stderr))-1]
	if want := "sfwatch: 38 calls counted in the kernel in 3 groups (0 under _other)"; last != want {
		t.Errorf("last line %q, want %q", last, want)
	}
	pmAssertPortFree(t, addr)
}

// TestDaemonKilled: kill -9 of the daemon leaves no program attached or
// loaded, and a new daemon starts cleanly with the same lock.
func TestDaemonKilled(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := ownedGroup(t)
	lock := filepath.Join(t.TempDir(), "daemon.lock")
	d := startDaemon(t, lock, "--watch", p.Rel)
	pid := d.cmd.Process.Pid
	if holders := bpfProgramHolders(); !holdsAny(holders, pid) {
		t.Fatalf("the daemon (pid %d) holds no BPF program", pid)
	}
	r := d.stop(t, syscall.SIGKILL) // checks that no program is left loaded
	if r.code != -1 {
		t.Errorf("exit %d after SIGKILL", r.code)
	}
	if holdsAny(bpfProgramHolders(), pid) {
		t.Errorf("pid %d still holds BPF programs", pid)
	}
	d = startDaemon(t, lock, "--watch", p.Rel)
	loopIn(t, p.Path, 4)
	r = d.stop(t, syscall.SIGINT)
	if r.code != 0 || !strings.Contains(r.stderr, "sfwatch: 4 calls counted in the kernel in 1 groups") {
		t.Errorf("new daemon: exit %d; stderr:\n%s", r.code, r.stderr)
	}
}

// TestDaemonFavorDynmods: the daemon mounts cgroup2 with favordynmods
// while it runs (unless told not to), and puts the mount back as it was
// when it stops; its clients' runs go on either way.
func TestDaemonFavorDynmods(t *testing.T) {
	testenv.RequirePrivileged(t)
	favor := func() bool {
		return strings.Contains(readFileString("/proc/self/mountinfo"), "favordynmods")
	}
	if favor() {
		testenv.SkipOrFail(t, "the cgroup2 mount has favordynmods already (another daemon?): nothing to turn on and back")
	}
	lock := filepath.Join(t.TempDir(), "daemon.lock")
	d := startDaemon(t, lock, "--favordynmods=true")
	if !favor() || !strings.Contains(d.stderr.String(), "cgroup2 mounted with favordynmods until the daemon stops") {
		t.Errorf("favordynmods while the daemon runs: %v; stderr:\n%s", favor(), d.stderr.String())
	}
	r := sfwatch(t, nil, "run", "--quiet", "--daemon", "--socket", socketBeside(lock), "--", "true")
	if r.code != 0 {
		t.Errorf("a run through it: exit %d\n%s", r.code, r.stderr)
	}
	d.stop(t, syscall.SIGTERM)
	if favor() {
		t.Error("favordynmods still on after the daemon stopped")
	}
}

func holdsAny(holders map[uint32][]int, pid int) bool {
	for _, pids := range holders {
		for _, p := range pids {
			if p == pid {
				return true
			}
		}
	}
	return false
}
