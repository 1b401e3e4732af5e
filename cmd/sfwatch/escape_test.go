package main

// Tasks that leave the run's group: a root command can write its pid into
// another group's cgroup.procs. run still sees its calls (and those of
// what it forks there), counts it as escaped, and kills it at the end.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunFollowsEscapedProcess: 3N calls (N in the group, N after moving
// out, N by a child started outside) are all the run's; one task escaped;
// the child outside is killed when the run ends.
func TestRunFollowsEscapedProcess(t *testing.T) {
	testenv.RequirePrivileged(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(mount, fmt.Sprintf("sfwatch-test-elsewhere-%d", os.Getpid()))
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the run failed to kill, so that the group can go.
		os.WriteFile(filepath.Join(elsewhere, "cgroup.kill"), []byte("1"), 0)
		for range 100 {
			if err := os.Remove(elsewhere); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	const n = 100
	report := filepath.Join(t.TempDir(), "report.json")
	r := runWorkload(t, []string{"--quiet", "-c", "--report", report, "--expect", "escaped==1"}, "escape", elsewhere, strconv.Itoa(n))
	if r.code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	s := readReport(t, report).Summary
	if *s.Calls != 3*n || *s.Bytes != 3*n*4096 || *s.OffsetPtr != 3*n || *s.Escaped != 1 {
		t.Errorf("report: calls %d bytes %d offset_ptr %d escaped %d; want %d, %d, %d, 1",
			*s.Calls, *s.Bytes, *s.OffsetPtr, *s.Escaped, 3*n, 3*n*4096, 3*n)
	}
	if !strings.Contains(r.stderr, "1  tasks that left the group") || !strings.Contains(r.stderr, ", 1 left the group (followed)") {
		t.Errorf("-c table or accounting line lack the escape:\n%s", r.stderr)
	}

	pid, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("workload stdout %q: %v", r.stdout, err)
	}
	// Killed by the run's cleanup; reaped by whoever inherited it.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		if state := procState(pid); state == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child started outside the group (pid %d, state %s) outlived the run", pid, procState(pid))
		}
	}
}
