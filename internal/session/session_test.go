package session

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// ourGroups lists the cgroups this test process created and left.
func ourGroups(t *testing.T) []string {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(mount, "sfwatch-"+strconv.Itoa(os.Getpid())+"-*"))
	return left
}

// TestRunCancelKillsGroup: cancelling the context ends the command and
// everything it started, and Run reports the signal.
func TestRunCancelKillsGroup(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err := Run(ctx, exec.Command("sh", "-c", "sleep 300 & sleep 300"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if out.ExitCode != 128+9 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", out.ExitCode)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
	if left := ourGroups(t); len(left) > 0 {
		t.Errorf("groups left: %v", left)
	}
}

// TestRunDaemonHoldingOutput: a daemon the command leaves behind keeps its
// stdout pipe open; Run still returns as soon as the command exits, since
// it kills the group before waiting for the output to close.
func TestRunDaemonHoldingOutput(t *testing.T) {
	testenv.RequirePrivileged(t)
	var stdout bytes.Buffer
	cmd := exec.Command("sh", "-c", "setsid sleep 300 & echo started")
	cmd.Stdout = &stdout
	start := time.Now()
	out, err := Run(context.Background(), cmd, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v: it waited for the daemon", d)
	}
	if out.ExitCode != 0 || stdout.String() != "started\n" {
		t.Errorf("exit %d, stdout %q", out.ExitCode, stdout.String())
	}
	if left := ourGroups(t); len(left) > 0 {
		t.Errorf("groups left: %v", left)
	}
}
