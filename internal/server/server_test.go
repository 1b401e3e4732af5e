package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/daemon"
	"github.com/sfwatch/sfwatch/internal/gate"
	"github.com/sfwatch/sfwatch/internal/protocol"
	"github.com/sfwatch/sfwatch/internal/session"
	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// roleEnv makes this test binary a loop workload ("loop N") or a hostile
// client ("hostile SOCKET"), re-executed by a test.
const roleEnv = "SFWATCH_SERVER_TEST_ROLE"

func TestMain(m *testing.M) {
	role := strings.Fields(os.Getenv(roleEnv))
	switch {
	case len(role) == 2 && role[0] == "loop":
		n, _ := strconv.Atoi(role[1])
		if _, err := (testworkload.Loop{N: n, Offsets: testworkload.Alternate}).Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case len(role) == 2 && role[0] == "hostile":
		os.Exit(hostile(role[1]))
	}
	os.Exit(m.Run())
}

// testServer is a daemon and its socket in this process.
type testServer struct {
	d      *daemon.Daemon
	s      *Server
	socket string
	dir    string // reachable by nobody
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	testenv.RequirePrivileged(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.Start(mount, daemon.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	dir, err := os.MkdirTemp("", "sfwatch-server-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	cfg.Socket = filepath.Join(dir, "sfwatch.sock")
	cfg.SocketMode = 0o666
	if cfg.MaxRunsPerUser == 0 {
		cfg.MaxRunsPerUser = DefaultMaxRunsPerUser
	}
	if cfg.MaxRingsPerUser == 0 {
		cfg.MaxRingsPerUser = DefaultMaxRingsPerUser
	}
	s, err := Listen(d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testServer{d: d, s: s, socket: cfg.Socket, dir: dir}
}

// loopRun runs the loop workload of n calls through the daemon, as the
// sfwatch command does: a connection of its own.
func (ts *testServer) loopRun(t *testing.T, n int) session.Outcome {
	t.Helper()
	c, err := client.Dial(ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=loop %d", roleEnv, n))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := session.Run(ctx, cmd, session.Config{Daemon: c, Sink: nil})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestBackToBack: two hundred runs through the daemon one after another,
// each exact, leave nothing behind in the daemon: no run, connection or
// group, no kernel group -> row entry, only the lanes parked for the
// next runs, and as many goroutines and descriptors as before; once the
// lanes have waited ParkedFor, not even those.
func TestBackToBack(t *testing.T) {
	ts := startServer(t, Config{ParkedFor: 2 * time.Second})
	ts.loopRun(t, 1) // the first lane, parked from here on
	goroutines, fds, lanesBefore := runtime.NumGoroutine(), openFDs(t), ts.d.Lanes()
	const runs, calls = 200, 30
	want := testworkload.Loop{N: calls, Offsets: testworkload.Alternate}.Expected()
	start := time.Now()
	for i := range runs {
		out := ts.loopRun(t, calls)
		s := out.Summary
		if out.ExitCode != 0 || s.Calls != want.Calls || s.Bytes != want.Bytes || s.OffsetNull != want.Null || s.OffsetPtr != want.Pointer || s.Lost != 0 {
			t.Fatalf("run %d: exit %d, %+v; want %+v", i, out.ExitCode, s.Totals, want)
		}
	}
	t.Logf("%d runs in %v", runs, time.Since(start))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, c := ts.s.Runs()
		rows, err := ts.d.GroupRows()
		if err != nil {
			t.Fatal(err)
		}
		// Left: groups but the empty ones made ahead.
		entries, _ := os.ReadDir(ts.s.runs.Path)
		var left []string
		groups := 0
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			groups++
			events, _ := os.ReadFile(filepath.Join(ts.s.runs.Path, e.Name(), "cgroup.events"))
			if !strings.Contains(string(events), "populated 0") {
				left = append(left, e.Name())
			}
		}
		if groups > spareGroups+1 {
			left = append(left, fmt.Sprintf("%d groups in all", groups))
		}
		lanes, parked := ts.d.Lanes(), ts.s.Parked()
		g, f := runtime.NumGoroutine(), openFDs(t)
		// A lane's ring is a descriptor: a run that starts as the last
		// one's group is removed makes a second lane.
		if r == 0 && c == 0 && rows == 0 && len(left) == 0 && lanes == parked && parked <= maxParkedPerUser && g <= goroutines && f <= fds+lanes-lanesBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left: %d runs, %d connections, %d group rows, groups %v, %d lanes for %d parked (%d before), %d goroutines (%d before), %d fds (%d before)",
				r, c, rows, left, lanes, parked, lanesBefore, g, goroutines, f, fds)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ts.d.Lanes() != 0 || ts.s.Parked() != 0 || openFDs(t) > fds-lanesBefore; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after ParkedFor: %d lanes, %d parked, %d fds (%d before the first run)", ts.d.Lanes(), ts.s.Parked(), openFDs(t), fds-lanesBefore)
		}
	}
}

// TestCheckChild: the policy on real processes. Root may have anything
// watched; nobody only its own child, of its uid, at the gate.
func TestCheckChild(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir, err := os.MkdirTemp("", "sfwatch-gate-") // not t.TempDir: nobody must reach it
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	gatePath, err := gate.Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	start := func(path string, attr *syscall.SysProcAttr, args ...string) *exec.Cmd {
		cmd := exec.Command(path, args...)
		cmd.SysProcAttr = attr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	// A held child: the gate waiting on a pipe that never gets its byte.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	held := exec.Command(gatePath, "3", "/bin/true", "true")
	held.ExtraFiles = []*os.File{r}
	held.SysProcAttr = nobody
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { held.Process.Kill(); held.Wait() })
	sleeping := start("/bin/sleep", nobody, "60")
	rootChild := start("/bin/sleep", nil, "60")

	self := os.Getpid()
	for _, tc := range []struct {
		name string
		p    peer
		pid  int
		want string // "" for allowed
	}{
		{"nobody's held child", peer{pid: self, uid: 65534}, held.Process.Pid, ""},
		{"root, any process", peer{pid: 1, uid: 0}, rootChild.Process.Pid, ""},
		{"not at the gate", peer{pid: self, uid: 65534}, sleeping.Process.Pid, "not the gate"},
		{"another uid", peer{pid: self, uid: 65534}, rootChild.Process.Pid, "does not run as uid 65534"},
		{"not its child", peer{pid: self + 1, uid: 65534}, held.Process.Pid, "is not your child"},
		{"pid 1", peer{pid: self, uid: 65534}, 1, "is not your child"},
	} {
		err := checkChild(tc.p, tc.pid, gatePath)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v; want allowed", tc.name, err)
		case tc.want != "" && (err == nil || !errors.Is(err, errDenied) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v; want denied, %q", tc.name, err, tc.want)
		}
	}
}

// hostileResult is what a hostile client got for each attempt.
type hostileResult map[string]protocol.Reply

// hostile, as nobody, asks the daemon at socket what it may not: totals
// and finish before any run, a run of pid 1, of its own child that
// already runs a program, with a descriptor that is no pidfd. It prints
// the replies as JSON.
func hostile(socket string) int {
	c, err := protocol.Dial(socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	out := hostileResult{}
	ask := func(name string, req protocol.Request, fds ...int) {
		if err := c.Send(req, fds...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var r protocol.Reply
		files, err := c.Recv(&r)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, f := range files {
			f.Close()
		}
		out[name] = r
	}
	ask("hello", protocol.Request{Op: protocol.OpHello, Version: protocol.Version})
	ask("totals first", protocol.Request{Op: protocol.OpTotals})
	ask("finish first", protocol.Request{Op: protocol.OpFinish})
	run := protocol.Request{Op: protocol.OpRun, Version: protocol.Version, RingSize: 1 << 16, SampleEvery: 1}
	if fd, err := unix.PidfdOpen(1, 0); err == nil {
		ask("pid 1", run, fd)
	}
	child := exec.Command("/bin/sleep", "60")
	if err := child.Start(); err == nil {
		if fd, err := unix.PidfdOpen(child.Process.Pid, 0); err == nil {
			ask("running child", run, fd)
		}
		child.Process.Kill()
		child.Wait()
	}
	if f, err := os.Open("/dev/null"); err == nil {
		ask("not a pidfd", run, int(f.Fd()))
	}
	ask("no descriptor", run)
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// TestRefusals: a client with no privilege, speaking the protocol itself,
// is refused every request that is not its own child at the gate, with
// the reason; the daemon is left with nothing.
func TestRefusals(t *testing.T) {
	ts := startServer(t, Config{})
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(ts.dir, "server.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), roleEnv+"=hostile "+ts.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = ts.dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("hostile client: %v\n%s", err, stderr.String())
	}
	var got hostileResult
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if h := got["hello"]; h.Error != "" || h.Root || h.Version != protocol.Version {
		t.Errorf("hello: %+v; want the version, not root", h)
	}
	for name, want := range map[string]struct{ code, text string }{
		"totals first":  {protocol.CodeBad, "before run"},
		"finish first":  {protocol.CodeBad, "before run"},
		"pid 1":         {protocol.CodeDenied, "is not your child"},
		"running child": {protocol.CodeDenied, "not the gate"},
		"not a pidfd":   {protocol.CodeDenied, "not a pidfd"},
		"no descriptor": {protocol.CodeBad, "pidfd"},
	} {
		r, ok := got[name]
		if !ok || r.Code != want.code || !strings.Contains(r.Error, want.text) || r.Group != "" {
			t.Errorf("%s: %+v (asked: %v); want code %s saying %q", name, r, ok, want.code, want.text)
		}
	}
	if runs, _ := ts.s.Runs(); runs != 0 || ts.d.Lanes() != 0 {
		t.Errorf("after refusals: %d runs, %d lanes", runs, ts.d.Lanes())
	}
}
