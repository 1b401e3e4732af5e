package main

// Helpers of the tests that watch a group sfwatch did not create (attach,
// and attach's blocked output): a pm-wait-calls process the test starts
// itself, a cgroup of the test's own, and moving a process into it.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
)

// pmTarget is a pm-wait-calls process started by the test (not by sfwatch).
type pmTarget struct {
	cmd      *exec.Cmd
	goFile   string
	doneFile string
	exited   chan struct{}
}

func startTarget(t *testing.T, dir, name string, n int) *pmTarget {
	t.Helper()
	p := &pmTarget{goFile: filepath.Join(dir, name+".go"), doneFile: filepath.Join(dir, name+".done"), exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "pm-wait-calls", p.goFile, strconv.Itoa(n), p.doneFile)
	p.cmd.Env = append(os.Environ(), pmEnv...)
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *pmTarget) pid() int { return p.cmd.Process.Pid }

func (p *pmTarget) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// pmGroup creates a cgroup v2 group for the test, outside sfwatch's
// naming, and removes it (after killing what is left in it) at the end.
func pmGroup(t *testing.T) (mount, path string) {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(mount, fmt.Sprintf("attachtest-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := os.Remove(path)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("removing test cgroup %s: %v", path, err)
				return
			}
		}
	})
	return mount, path
}

// moveInto writes pid into the group's cgroup.procs.
func moveInto(t *testing.T, group string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(group, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("moving pid %d into %s: %v", pid, group, err)
	}
}

// cgroupOf returns the cgroup v2 path of pid, as /proc/PID/cgroup says.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 line for pid %d", pid)
	return ""
}
