package main

// sfwatch ends, reports and cleans up whatever happens to its outputs or to
// itself: an output that is open but never read (a pipe, a FIFO), an output
// whose reader went away, a FIFO that nobody opens, attach with a stderr
// nobody reads, and sfwatch killed with SIGKILL (its watchdog).

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// endBound is how long sfwatch may take, after its child exited or it was
// told to stop, with an output that takes no data: it gives up on the
// output after outputGiveUp, the rest is cleanup on a busy 2-core machine.
const endBound = outputGiveUp + 7*time.Second

// runBounded runs cmd, killing it after limit: a hang fails the test
// instead of holding up the whole binary.
func runBounded(t *testing.T, limit time.Duration, cmd *exec.Cmd) (elapsed time.Duration) {
	t.Helper()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sfwatch %q still running after %v: killed", cmd.Args[1:], limit)
	}
	return time.Since(start)
}

// TestRunBlockedOutput: events going to an output that is open but never
// read (stderr into a pipe, -o into a FIFO) fill it, and sfwatch's writes
// block. Once the child has exited sfwatch gives up on that output within
// outputGiveUp, still removes its group, detaches, writes --report, and
// exits 125. Before, it hung there for good, deaf to SIGINT and SIGTERM.
func TestRunBlockedOutput(t *testing.T) {
	testenv.RequirePrivileged(t)
	const n = 20000 // about 1.4 MB of lines: far more than a pipe holds
	for _, where := range []string{"stderr", "fifo"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			report := filepath.Join(dir, "report.json")
			args := []string{"run", "--report", report}
			var stderrText lockedBuffer
			var stderrFile *os.File
			switch where {
			case "stderr":
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer pr.Close() // open, never read
				defer pw.Close()
				stderrFile = pw
			case "fifo":
				fifo := filepath.Join(dir, "events")
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
				r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close() // open, never read
				args = append(args, "-o", fifo)
			}
			cmd := exec.Command(sfwatchBin, append(args, "--", os.Args[0], "loop", "1", strconv.Itoa(n))...)
			cmd.Env = append(os.Environ(), workloadEnv()...)
			if stderrFile != nil {
				cmd.Stderr = stderrFile
			} else {
				cmd.Stderr = &stderrText
			}
			checkBlockedRun(t, cmd, report, n)
			if where == "fifo" {
				want := accountingLine(n, n, 0) + "\nsfwatch: writing events: -o " + args[len(args)-1] +
					" took no data for " + outputGiveUp.String() + " at the end of the run (nobody reads it); gave up on it\n"
				if got := stderrText.String(); got != want {
					t.Errorf("stderr %q, want %q", got, want)
				}
			}
		})
	}
}

// checkBlockedRun runs cmd (a run of the loop workload with n calls and
// --report report) and checks that it ended in time, with exit 125, the
// report written and nothing left behind.
func checkBlockedRun(t *testing.T, cmd *exec.Cmd, report string, n uint64) {
	t.Helper()
	// The loop itself takes well under a second here.
	elapsed := runBounded(t, endBound+20*time.Second, cmd)
	t.Logf("sfwatch took %v", elapsed)
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != exitFailed {
		t.Errorf("sfwatch ended with %v, want exit %d", cmd.ProcessState, exitFailed)
	}
	if r := readReport(t, report); *r.Summary.Calls != n || *r.ExitCode != 0 {
		t.Errorf("report: calls %d, exit code %d; want %d, 0", *r.Summary.Calls, *r.ExitCode, n)
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// TestRunOutputFIFONoReader: -o naming a FIFO that nobody opens for
// reading does not block sfwatch in open(2) forever: after outputGiveUp it
// says so in one line and exits 2, having started nothing.
func TestRunOutputFIFONoReader(t *testing.T) {
	testenv.RequirePrivileged(t)
	fifo := filepath.Join(t.TempDir(), "events")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), endBound+20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sfwatchBin, "run", "-o", fifo, "--", "true")
	cmd.WaitDelay = time.Second
	var stderrText lockedBuffer
	cmd.Stderr = &stderrText
	start := time.Now()
	cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sfwatch blocked opening a FIFO without a reader (killed after %v)", time.Since(start))
	}
	want := "sfwatch: -o " + fifo + ": a FIFO that no process opened for reading within " + outputGiveUp.String() + "; start its reader first\n"
	if code := cmd.ProcessState.ExitCode(); code != exitUsage || stderrText.String() != want {
		t.Errorf("exit %d, stderr %q; want %d and %q", code, stderrText.String(), exitUsage, want)
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// TestAttachBlockedStderr: attach's events go to a stderr that is never
// read; SIGTERM still ends sfwatch within outputGiveUp and a few seconds,
// with exit 125 and the programs detached. Before, it hung for good.
func TestAttachBlockedStderr(t *testing.T) {
	testenv.RequirePrivileged(t)
	const n = 20000
	dir := t.TempDir()
	_, group := pmGroup(t)
	target := startTarget(t, dir, "target", n)
	moveInto(t, group, target.pid())

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(sfwatchBin, "attach", "--cgroup", group)
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	// Read the "watching" line (the programs are attached), then never
	// read again.
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || !strings.Contains(line, "sfwatch: watching") {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := os.WriteFile(target.goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(target.doneFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the target never finished its calls")
		}
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(endBound):
		t.Fatalf("sfwatch attach still running %v after SIGTERM, with its stderr not read", endBound)
	}
	t.Logf("sfwatch ended %v after SIGTERM", time.Since(start))
	if code := cmd.ProcessState.ExitCode(); code != exitFailed {
		t.Errorf("sfwatch ended with %v, want exit %d", cmd.ProcessState, exitFailed)
	}
	if !target.alive() {
		t.Error("attach killed the process it watched")
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// TestRunKilledWatchdog: sfwatch run killed with SIGKILL does not leave its
// child running untraced: its watchdog kills and removes the group within
// a second, then exits itself; the programs went with sfwatch's
// descriptors. Before, the group and child stayed until a later run.
func TestRunKilledWatchdog(t *testing.T) {
	testenv.RequirePrivileged(t)
	cmd := exec.Command(sfwatchBin, "run", "--", "sleep", "60")
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	// Whatever happens, leave no group and no sleep behind.
	pattern := groupPattern(t, pid)
	t.Cleanup(func() {
		groups, _ := filepath.Glob(pattern)
		for _, g := range groups {
			os.WriteFile(filepath.Join(g, "cgroup.kill"), []byte("1"), 0)
			for deadline := time.Now().Add(5 * time.Second); os.Remove(g) != nil && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})

	// Wait until the child runs in the group.
	var group string
	var childPID int
	for deadline := time.Now().Add(20 * time.Second); childPID == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sfwatch's child never ran in its group")
		}
		groups, _ := filepath.Glob(pattern)
		if len(groups) != 1 {
			continue
		}
		group = groups[0]
		procs, _ := os.ReadFile(filepath.Join(group, "cgroup.procs"))
		if f := strings.Fields(string(procs)); len(f) > 0 {
			childPID, _ = strconv.Atoi(f[0])
		}
	}
	// sfwatch's children but the command: the watchdog.
	var helpers []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(data)) {
			if p, _ := strconv.Atoi(f); p != childPID {
				helpers = append(helpers, p)
			}
		}
	}
	if len(helpers) != 1 {
		t.Errorf("sfwatch has %d helper processes (%v), want one watchdog", len(helpers), helpers)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	start := time.Now()
	gone := func(p int) bool {
		// A zombie waiting for its new parent to reap it is gone too.
		st := procState(p)
		return st == "" || st == "Z"
	}
	for {
		_, err := os.Stat(group)
		done := os.IsNotExist(err) && gone(childPID)
		for _, h := range helpers {
			done = done && gone(h)
		}
		if done {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("1s after sfwatch was killed: group %s exists: %v, child %d gone: %v, watchdog %v gone: %v",
				group, err == nil, childPID, gone(childPID), helpers, len(helpers) == 1 && gone(helpers[0]))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("group, child and watchdog gone %v after sfwatch was killed", time.Since(start))
	assertNothingLeft(t, pid)
}

// TestRunOutputPipeClosed: when whoever reads sfwatch's stderr goes away
// (sfwatch run ... 2>&1 | head), sfwatch is not killed by SIGPIPE with its
// group left behind: the child runs to its end, everything is cleaned up,
// and the exit code says sfwatch failed.
func TestRunOutputPipeClosed(t *testing.T) {
	testenv.RequirePrivileged(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close() // nobody reads: the first write fails
	const n = 20000
	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sfwatchBin, "run", "--report", report, "--", os.Args[0], "loop", "1", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), workloadEnv()...)
	cmd.Stderr = pw
	err = cmd.Run()
	pw.Close()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("sfwatch was killed by %v", ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitFailed {
		t.Errorf("exit %d (%v), want %d", code, err, exitFailed)
	}
	// The workload ran to its end, and the report was still written.
	if r := readReport(t, report); *r.Summary.Calls != n || *r.ExitCode != 0 {
		t.Errorf("report: calls %d, exit code %d; want %d, 0", *r.Summary.Calls, *r.ExitCode, n)
	}
	assertNothingLeft(t, cmd.Process.Pid)
}
