package main

// Tests of `sfwatch attach`: it watches a group that exists already, sees
// exactly the calls made inside it (by a process moved in after attach
// started, too) and none from outside, exports the same metrics as run,
// and owns nothing: on SIGINT or SIGTERM it leaves the group and its
// processes as they were. Helpers come from metrics_test.go (pm*).

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

func init() {
	workloads["pm-wait-calls"] = pmWaitCallsWorkload
}

// pmWaitCallsWorkload: GO N DONE. Waits until the file GO exists, makes N
// pointer-offset sendfile calls of 4 KiB to /dev/null from one thread,
// writes its totals to DONE, then waits for SIGTERM and exits 0.
func pmWaitCallsWorkload(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: pm-wait-calls GO N DONE")
	}
	goFile, done := args[0], args[2]
	n, _ := strconv.Atoi(args[1])
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	f, err := openWorkloadFiles()
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		select {
		case <-term:
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	runtime.LockOSThread()
	var tot pmTotals
	off := new(int64)
	for range n {
		*off = 0
		r, _, e := unix.Syscall6(unix.SYS_SENDFILE, f.devNull.Fd(), f.in.Fd(), uintptr(unsafe.Pointer(off)), 4096, 0, 0)
		if e != 0 {
			return fmt.Errorf("sendfile: %w", e)
		}
		tot.Calls++
		tot.Pointer++
		tot.Bytes += uint64(r)
	}
	runtime.KeepAlive(off)
	tot.PID = os.Getpid()
	if err := pmWriteFile(done, tot); err != nil {
		return err
	}
	<-term
	return nil
}

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

// TestAttach: a process sleeps in a group, sfwatch attaches (by --cgroup,
// with the group moved into after attach started; or by --pid), the
// process makes N calls while a process outside the group makes calls
// too; SIGINT or SIGTERM ends sfwatch. Exactly N events, all from the
// process in the group; exact metrics while it runs; the group and both
// processes still there afterwards.
func TestAttach(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name   string
		by     string // "cgroup", "cgroup-relative" or "pid"
		signal syscall.Signal
	}{
		{"cgroup", "cgroup", syscall.SIGINT},
		{"cgroup-relative", "cgroup-relative", syscall.SIGTERM},
		{"pid", "pid", syscall.SIGTERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n, outsideN = 1000, 700
			dir := t.TempDir()
			mount, group := pmGroup(t)
			inside := startTarget(t, dir, "inside", n)
			outside := startTarget(t, dir, "outside", outsideN)
			ownGroup := cgroupOf(t, os.Getpid())
			if tc.by == "pid" {
				moveInto(t, group, inside.pid()) // --pid finds the group at start
			}

			addr := pmAddr(t)
			events := filepath.Join(dir, "events.json")
			args := []string{"attach", "--format", "json", "-o", events, "--metrics-addr", addr}
			var what string
			switch tc.by {
			case "cgroup":
				args = append(args, "--cgroup", group)
				what = "cgroup " + group
			case "cgroup-relative":
				rel, _ := filepath.Rel(mount, group)
				args = append(args, "--cgroup", rel)
				what = "cgroup " + group
			case "pid":
				args = append(args, "--pid", strconv.Itoa(inside.pid()))
				what = fmt.Sprintf("cgroup %s (the group of pid %d)", group, inside.pid())
			}
			p := pmStart(t, args...)
			notice := "sfwatch: watching " + what + " until SIGINT or SIGTERM\n"
			p.waitFor(t, "the watching notice", 30*time.Second, func() bool {
				return strings.Contains(p.stderr.String(), notice)
			})
			if tc.by != "pid" {
				moveInto(t, group, inside.pid()) // after attach started
			}
			if got := cgroupOf(t, outside.pid()); got != ownGroup {
				t.Fatalf("outsider in %s, want the test's own group %s", got, ownGroup)
			}

			// Both go at once.
			for _, w := range []*pmTarget{inside, outside} {
				if err := os.WriteFile(w.goFile, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			in := pmReady(t, p, inside.doneFile)
			out := pmReady(t, p, outside.doneFile)
			if in.Calls != n || out.Calls != outsideN {
				t.Fatalf("workloads made %d and %d calls, want %d and %d", in.Calls, out.Calls, n, outsideN)
			}

			m := pmScrapeDrained(t, p, nil, "http://"+addr+"/metrics")
			checkWorkloadTotals(t, m, in)
			checkSelfMetrics(t, m)
			if d := m.value(t, "sfwatch_events_delivered_total"); d != n {
				t.Errorf("delivered %d, want %d", d, n)
			}

			r := p.stop(t, tc.signal)
			if r.code != 0 {
				t.Errorf("exit %d after %v, want 0; stderr:\n%s", r.code, tc.signal, r.stderr)
			}
			want := fmt.Sprintf("sfwatch: %d calls counted in the kernel, %d events delivered, 0 lost", n, n)
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
			data, err := os.ReadFile(events)
			if err != nil {
				t.Fatal(err)
			}
			evs := parseJSONEvents(t, string(data))
			if len(evs) != n {
				t.Errorf("%d events, want %d", len(evs), n)
			}
			byPID := make(map[uint32]int)
			for _, e := range evs {
				byPID[e.PID]++
				if e.Ret != 4096 || e.Count != 4096 || e.Offset == nil || e.Class != "ok" || len(e.Violations) != 0 {
					t.Errorf("unexpected event %+v", e)
					break
				}
			}
			if byPID[uint32(inside.pid())] != n || len(byPID) != 1 {
				t.Errorf("events by pid: %v; want %d from %d (inside) and none from %d (outside)", byPID, n, inside.pid(), outside.pid())
			}

			// attach owns nothing: the group and both processes are as
			// they were.
			if _, err := os.Stat(group); err != nil {
				t.Errorf("the watched group is gone: %v", err)
			}
			for _, w := range []*pmTarget{inside, outside} {
				if !w.alive() {
					t.Errorf("pid %d was killed (%v)", w.pid(), w.cmd.ProcessState)
				}
			}
			if got, want := filepath.Join(mount, cgroupOf(t, inside.pid())), group; got != want {
				t.Errorf("inside process now in %s, want %s", got, want)
			}
			pmAssertPortFree(t, addr)
		})
	}
}

// TestAttachUsage: wrong combinations of flags are usage errors (exit 2,
// one line); a group or pid that does not exist is a failure (exit 125,
// one line). Nothing is left behind.
func TestAttachUsage(t *testing.T) {
	for _, args := range [][]string{
		{"attach"},
		{"attach", "--cgroup", "x", "--pid", "1"},
		{"attach", "--pid", "1", "extra"},
		{"attach", "--pid", "1", "--sample", "0"},
		{"attach", "--pid", "1", "--web-config", "/nonexistent"},
	} {
		r := sfwatch(t, nil, args...)
		if r.code != exitUsage || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, want %d, with one line; stderr:\n%s", args, r.code, exitUsage, r.stderr)
		}
	}
	testenv.RequirePrivileged(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	escape := mount + "/a/../../../etc"
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"attach", "--cgroup", "/no-such-group-" + strconv.Itoa(os.Getpid())}, exitFailed, []string{"no such group"}},
		{[]string{"attach", "--pid", "999999999"}, exitFailed, []string{"pid 999999999: no such process"}},
		// The path as typed, not the one it would have been taken for.
		{[]string{"attach", "--cgroup", escape}, exitFailed, []string{"opening cgroup " + escape + ": ", "leaves the cgroup2 mount " + mount}},
		// The root group is the whole machine: only on purpose.
		{[]string{"attach", "--pid", "1"}, exitUsage, []string{"pid 1 is in the root cgroup", "--cgroup /"}},
		{[]string{"attach", "--pid", "2"}, exitUsage, []string{"pid 2 is in the root cgroup", "--cgroup /"}},
	} {
		r := sfwatch(t, nil, tc.args...)
		if r.code != tc.code || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, want %d, with one line; stderr:\n%s", tc.args, r.code, tc.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr does not say %q:\n%s", tc.args, w, r.stderr)
			}
		}
	}
}

// TestAttachGroupRemoved: when the watched group is removed, attach says
// so in one line, reports and exits 0 within a few seconds.
func TestAttachGroupRemoved(t *testing.T) {
	testenv.RequirePrivileged(t)
	_, group := pmGroup(t)
	report := filepath.Join(t.TempDir(), "r.json")
	addr := pmAddr(t)
	p := pmStart(t, "attach", "--cgroup", group, "--metrics-addr", addr, "--report", report)
	p.waitFor(t, "the watching notice", 30*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), "sfwatch: watching cgroup "+group)
	})
	if up := pmScrape(t, nil, "http://"+addr+"/metrics").value(t, "sfwatch_child_up"); up != 1 {
		t.Errorf("sfwatch_child_up = %d while the group exists, want 1", up)
	}
	if err := os.Remove(group); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("attach still running 15 s after its group was removed; stderr:\n%s", p.stderr.String())
	}
	r := p.stop(t, syscall.SIGTERM) // already exited: collects the result
	t.Logf("exited %v after the group was removed", time.Since(removed).Round(10*time.Millisecond))
	out := lines(r.stderr)
	if r.code != 0 || len(out) < 2 || out[len(out)-2] != "sfwatch: cgroup "+group+" was removed: stopped watching" ||
		out[len(out)-1] != accountingLine(0, 0, 0) {
		t.Errorf("exit %d, stderr:\n%s\nwant 0, the removal line, then the accounting line", r.code, r.stderr)
	}
	readReport(t, report)
	pmAssertPortFree(t, addr)
}
