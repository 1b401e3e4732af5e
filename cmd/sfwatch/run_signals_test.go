package main

// Signals sent to sfwatch run itself: each one it forwards reaches the child
// exactly once; one that comes during set-up is neither fatal nor lost; one
// that comes after the child exited does not stop sfwatch from reporting and
// cleaning up.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunSignalsForwardedOnce: each signal sfwatch forwards, sent to the
// sfwatch process, reaches the child exactly once; the workload exits with
// the number it got.
func TestRunSignalsForwardedOnce(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			t.Parallel() // with each other only: the top-level test is not
			ready := filepath.Join(t.TempDir(), "ready")
			s := startSfwatch(t, "run", "--", os.Args[0], "count-sigterm", ready, strconv.Itoa(int(sig)))
			waitForFile(t, ready, s)
			if err := s.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r := s.wait(t)
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (one %v); stderr:\n%s", r.code, sig, r.stderr)
			}
			if want := accountingLine(0, 0, 0) + "\n"; r.stderr != want {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
		})
	}
}

// TestRunSignalDuringSetup: a SIGTERM that comes while sfwatch is still
// setting up (its group exists, the programs load, the child may not run
// yet) neither kills sfwatch, which would leave its group behind and print
// nothing, nor is lost: the child gets it, once, as soon as it runs.
func TestRunSignalDuringSetup(t *testing.T) {
	testenv.RequirePrivileged(t)
	codes := map[int]int{}
	for range 10 {
		ready := filepath.Join(t.TempDir(), "ready")
		s := startSfwatch(t, "run", "--", os.Args[0], "count-sigterm", ready)
		pattern := groupPattern(t, s.cmd.Process.Pid)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Microsecond) {
			if m, _ := filepath.Glob(pattern); len(m) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sfwatch created no group; stderr:\n%s", s.stderr.String())
			}
		}
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r := s.wait(t)
		if ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Errorf("a SIGTERM during set-up killed sfwatch itself (%v); stderr %q", ws.Signal(), r.stderr)
			continue
		}
		// The child got it before installing its handler (143), or after (1).
		codes[r.code]++
		if r.code != 128+int(syscall.SIGTERM) && r.code != 1 {
			t.Errorf("exit %d, want 143 or 1; stderr:\n%s", r.code, r.stderr)
		}
		if want := accountingLine(0, 0, 0) + "\n"; r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
	t.Logf("exit codes: %v", codes)
}

// TestRunSignalAfterChildExit: a SIGTERM that comes after the child has
// exited, while sfwatch detaches and reports, does not kill sfwatch before
// it has reported and removed its group.
func TestRunSignalAfterChildExit(t *testing.T) {
	testenv.RequirePrivileged(t)
	hit := 0
	for range 10 {
		ready := filepath.Join(t.TempDir(), "ready")
		s := startSfwatch(t, "run", "--", "sh", "-c", `: > "$1"`, "sh", ready)
		waitForFile(t, ready, s)
		// Once the group is empty the child has exited: signal sfwatch
		// then, if it is still there.
		pattern := groupPattern(t, s.cmd.Process.Pid)
		signalled := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
			m, _ := filepath.Glob(pattern)
			if len(m) == 0 {
				break // sfwatch is done
			}
			if ev, err := os.ReadFile(filepath.Join(m[0], "cgroup.events")); err == nil && strings.Contains(string(ev), "populated 0") {
				signalled = s.cmd.Process.Signal(syscall.SIGTERM) == nil
				break
			}
		}
		r := s.wait(t)
		if !signalled {
			continue
		}
		hit++
		if ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Errorf("a SIGTERM after the child exited killed sfwatch (%v); stderr %q", ws.Signal(), r.stderr)
			continue
		}
		if want := accountingLine(0, 0, 0) + "\n"; r.code != 0 || r.stderr != want {
			t.Errorf("exit %d, stderr %q; want 0 and %q", r.code, r.stderr, want)
		}
	}
	t.Logf("signalled sfwatch %d times out of 10 between its child's exit and its own", hit)
}
