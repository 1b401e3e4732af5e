package sfwatch_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch"
	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/daemon"
	"github.com/sfwatch/sfwatch/internal/server"
	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// asNobodyEnv marks this test binary run as nobody by
// TestGoPackageThroughDaemon.
const asNobodyEnv = "SFWATCH_TEST_AS_NOBODY"

// TestGoPackageThroughDaemon: with a daemon up, the package works for a
// user with no privilege at all: this test binary, run as nobody (uid
// 65534, no capabilities), passes TestLinuxSendfile (exact bytes, NULL
// offsets, no failure) and TestGoPackageUnprivilegedChild (Supported is
// nil, exact totals of a loop). The daemon runs in this process.
func TestGoPackageThroughDaemon(t *testing.T) {
	testenv.RequirePrivileged(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.Start(mount, daemon.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dir, err := os.MkdirTemp("", "sfwatch-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	socket := filepath.Join(dir, "sfwatch.sock")
	srv, err := server.Listen(d, server.Config{Socket: socket, SocketMode: 0o666,
		MaxRunsPerUser: server.DefaultMaxRunsPerUser, MaxRingsPerUser: server.DefaultMaxRingsPerUser})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sfwatch.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^(TestLinuxSendfile|TestGoPackageUnprivilegedChild)$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SFWATCH_SOCKET="+socket, asNobodyEnv+"=1", testenv.RequireEnv+"=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestLinuxSendfile ") || !strings.Contains(string(out), "--- PASS: TestGoPackageUnprivilegedChild ") {
		t.Fatalf("the tests as nobody: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		runs, conns := srv.Runs()
		if runs == 0 && conns == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still has %d runs and %d connections", runs, conns)
		}
	}
}

// TestGoPackageUnprivilegedChild runs only as nobody, from
// TestGoPackageThroughDaemon.
func TestGoPackageUnprivilegedChild(t *testing.T) {
	if os.Getenv(asNobodyEnv) == "" {
		return
	}
	if os.Geteuid() == 0 {
		t.Fatal("want to run as nobody")
	}
	if err := sfwatch.Supported(); err != nil {
		t.Fatalf("Supported with the daemon up: %v", err)
	}
	standalone := &sfwatch.Options{Via: sfwatch.Standalone}
	if err := standalone.Supported(); err == nil || !strings.Contains(err.Error(), "daemon") {
		t.Errorf("Supported standalone as nobody: %v; want an error naming root and the daemon", err)
	}
	loop := testworkload.Loop{N: 300, Offsets: testworkload.Alternate}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoopChild$")
	cmd.Env = append(os.Environ(), "SFWATCH_TEST_LOOP=300")
	res, err := sfwatch.Run(context.Background(), cmd, &sfwatch.Options{Via: sfwatch.Daemon})
	if err != nil {
		t.Fatal(err)
	}
	want := loop.Expected()
	s := res.Summary
	if res.ExitCode != 0 || s.Calls != want.Calls || s.Bytes != want.Bytes || s.EOF != want.EOF ||
		s.OffsetNull != want.Null || s.OffsetPtr != want.Pointer || s.Errors != 0 || uint64(len(res.Events)) != want.Calls {
		t.Errorf("exit %d, summary %+v, %d events; want %+v", res.ExitCode, s, len(res.Events), want)
	}
	if cmd.Process == nil || cmd.ProcessState == nil || cmd.ProcessState.Pid() != cmd.Process.Pid {
		t.Errorf("the caller's Cmd does not hold the child's process and state")
	}
}

// TestLoopChild is the loop of TestGoPackageUnprivilegedChild.
func TestLoopChild(t *testing.T) {
	if os.Getenv("SFWATCH_TEST_LOOP") == "" {
		return
	}
	defer os.Exit(0)
	if _, err := (testworkload.Loop{N: 300, Offsets: testworkload.Alternate}).Run(); err != nil {
		os.Exit(1)
	}
}
