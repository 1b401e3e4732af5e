package main

// Tests of run through the daemon (its clients): as an unprivileged user,
// exact and only its own calls; what such a user may not do; the daemon
// going away mid-run; the socket's access and the per-uid limits.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/server"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// clientDaemon is a daemon serving clients on its own socket, in a
// directory that nobody can reach.
type clientDaemon struct {
	*daemonProc
	socket string
}

// startClientDaemon starts a daemon whose socket anyone may use, plus
// args (later flags win).
func startClientDaemon(t *testing.T, args ...string) *clientDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "sfwatch-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "sfwatch.sock")
	all := append([]string{"--socket", socket, "--socket-mode", "0666", "--socket-group", ""}, args...)
	d := startDaemon(t, filepath.Join(dir, "lock"), all...)
	return &clientDaemon{d, socket}
}

// runsGroups lists the run groups of the daemon on socket: those that a
// command runs in (busy), or all, with the empty ones it makes ahead.
func runsGroups(t *testing.T, socket string, busy bool) []string {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	groups, _ := filepath.Glob(filepath.Join(mount, server.RunsGroup(socket), "run-*"))
	if !busy {
		return groups
	}
	var out []string
	for _, g := range groups {
		if strings.Contains(readFileString(filepath.Join(g, "cgroup.events")), "populated 1") {
			out = append(out, g)
		}
	}
	return out
}

// accountingRE reads the numbers of the accounting line.
var accountingRE = regexp.MustCompile(`sfwatch: (\d+) calls counted in the kernel, (\d+) events delivered, (\d+) lost`)

func accountingNumbers(t *testing.T, stderr string) (calls, events, lost uint64) {
	t.Helper()
	m := accountingRE.FindAllStringSubmatch(stderr, -1)
	if len(m) == 0 {
		t.Fatalf("no accounting line in:\n%s", stderr)
	}
	last := m[len(m)-1]
	n := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
	return n(last[1]), n(last[2]), n(last[3])
}

// TestDaemonClientUnprivileged: nobody runs a workload through the daemon
// and sees exactly its calls, as strace would show them (offsets,
// results, errors), while root's loop in another group at the same time
// is not seen; then selftest passes as nobody.
func TestDaemonClientUnprivileged(t *testing.T) {
	testenv.RequirePrivileged(t)
	d := startClientDaemon(t)
	bin, dir := sfwatchForNobody(t)
	work, _ := copyForNobody(t, os.Args[0], filepath.Base(os.Args[0]))

	other := ownedGroup(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				loopIn(t, other.Path, 500)
			}
		}
	})
	r := runAsNobodyEnv(t, bin, dir, workloadEnv(), nil, "run", "--socket", d.socket, "--format", "json", "--", work, "offsets")
	close(stop)
	wg.Wait()
	if r.code != 0 || !strings.Contains(r.stdout, "\nuid 65534\n") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	calls := offsetsManifest(t, r.stdout)
	out := lines(r.stderr)
	if len(out) != len(calls)+1 || out[len(calls)] != accountingLine(9, 9, 0) {
		t.Fatalf("want %d events and the accounting line, stderr:\n%s", len(calls), r.stderr)
	}
	for i, e := range parseJSONEvents(t, strings.Join(out[:len(calls)], "\n")) {
		c := calls[i]
		if e.TID != c.Tid || e.Ret != c.Ret || e.OutFD != c.OutFD || e.InFD != c.InFD || e.Count != c.Count {
			t.Errorf("event %d: %+v, want %+v", i, e, c)
		}
		if (e.Offset == nil) != c.Null {
			t.Errorf("event %d: offset %+v, want NULL %v", i, e.Offset, c.Null)
		} else if o := e.Offset; o != nil && (o.Before == nil || *o.Before != c.OffsetBefore || o.After == nil || *o.After != c.OffsetAfter) {
			t.Errorf("event %d: offset %+v, want %d => %d", i, *o, c.OffsetBefore, c.OffsetAfter)
		}
	}
	if left := runsGroups(t, d.socket, true); len(left) != 0 {
		t.Errorf("run groups still busy: %v", left)
	}

	// The CI files, as a standalone run writes them: an expectation that
	// holds, one that fails (exit 3), every report field there.
	reports, err := os.MkdirTemp("", "sfwatch-reports-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(reports)
	os.Chmod(reports, 0o777)
	report, junit := filepath.Join(reports, "r.json"), filepath.Join(reports, "j.xml")
	e := runAsNobodyEnv(t, bin, dir, workloadEnv(), nil, "run", "--socket", d.socket, "--quiet",
		"--expect", "calls==9", "--expect", "errors==0", "--report", report, "--junit", junit, "--", work, "offsets")
	if e.code != exitExpectFailed || !strings.Contains(e.stderr, "expect calls==9: ok") || !strings.Contains(e.stderr, "expect errors==0: FAILED") {
		t.Errorf("expectations through the daemon: exit %d\n%s", e.code, e.stderr)
	}
	rep := readReport(t, report)
	failed := uint64(0)
	for _, c := range calls {
		if c.Ret < 0 {
			failed++
		}
	}
	if *rep.Summary.Calls != 9 || *rep.Summary.Errors != failed || *rep.ExitCode != 0 {
		t.Errorf("report: %d calls, %d errors, the command's exit %d; want 9, %d and 0", *rep.Summary.Calls, *rep.Summary.Errors, *rep.ExitCode, failed)
	}
	readJUnit(t, junit, 0)

	s := runAsNobody(t, bin, dir, nil, "selftest", "--socket", d.socket)
	if s.code != 0 || !strings.Contains(s.stderr, "selftest: PASS") || !strings.Contains(s.stderr, "through the daemon") {
		t.Errorf("selftest as nobody: exit %d\n%s", s.code, s.stderr)
	}
	d.stop(t, syscall.SIGTERM)
}

// TestDaemonClientRefusals: what nobody may not do through the daemon.
// attach is root's (of the whole machine, too); the command cannot move itself out of its group (into
// the cgroup2 root or the runs' parent); a socket that is not nobody's
// to use says so; --daemon without a daemon and --daemon --standalone say
// what is wrong. Each in one line, leaving nothing behind.
func TestDaemonClientRefusals(t *testing.T) {
	testenv.RequirePrivileged(t)
	d := startClientDaemon(t)
	bin, dir := sfwatchForNobody(t)
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}

	a := runAsNobody(t, bin, dir, nil, "attach", "--socket", d.socket, "--cgroup", "/")
	if a.code != exitFailed || strings.Count(a.stderr, "\n") != 1 || !strings.Contains(a.stderr, "attach is root's") {
		t.Errorf("attach as nobody: exit %d, stderr %q; want 125 and one line", a.code, a.stderr)
	}

	for _, target := range []string{mount, filepath.Join(mount, server.RunsGroup(d.socket))} {
		script := fmt.Sprintf("echo $$ > %s/cgroup.procs && echo moved", target)
		m := runAsNobody(t, bin, dir, nil, "run", "--socket", d.socket, "--", "/bin/sh", "-c", script)
		if m.code == 0 || strings.Contains(m.stdout, "moved") || !strings.Contains(m.stderr, "Permission denied") {
			t.Errorf("moving itself to %s: exit %d, stdout %q, stderr %q; want a failed write", target, m.code, m.stdout, m.stderr)
		}
	}

	closed := startClientDaemon(t, "--socket-mode", "0660")
	c := runAsNobody(t, bin, dir, nil, "run", "--socket", closed.socket, "--", "true")
	if c.code != exitFailed || strings.Count(c.stderr, "\n") != 1 || !strings.Contains(c.stderr, "permission denied") || !strings.Contains(c.stderr, "--socket-group") {
		t.Errorf("run on a socket of mode 0660: exit %d, stderr %q; want 125 and one line naming --socket-group", c.code, c.stderr)
	}

	n := runAsNobody(t, bin, dir, nil, "run", "--daemon", "--socket", filepath.Join(dir, "none.sock"), "--", "true")
	if n.code != exitFailed || strings.Count(n.stderr, "\n") != 1 || !strings.Contains(n.stderr, "no daemon listens") || !strings.Contains(n.stderr, "sfwatch daemon") {
		t.Errorf("run --daemon without a daemon: exit %d, stderr %q", n.code, n.stderr)
	}
	u := runAsNobody(t, bin, dir, nil, "run", "--daemon", "--standalone", "--", "true")
	if u.code != exitUsage || strings.Count(u.stderr, "\n") != 1 {
		t.Errorf("run --daemon --standalone: exit %d, stderr %q; want 2", u.code, u.stderr)
	}
	if left := runsGroups(t, d.socket, true); len(left) != 0 {
		t.Errorf("run groups still busy: %v", left)
	}
	closed.stop(t, syscall.SIGTERM)
	d.stop(t, syscall.SIGTERM)
}

// TestDaemonClientLimits: with --max-runs-per-user 1, nobody's second run
// at once is refused; a ring larger than --max-ring-per-user is refused;
// a run that floods its small ring loses its own events (counted, its
// totals exact) while another user's run at the same time loses none.
func TestDaemonClientLimits(t *testing.T) {
	testenv.RequirePrivileged(t)
	d := startClientDaemon(t, "--max-runs-per-user", "1", "--max-ring-per-user", "1048576")
	bin, dir := sfwatchForNobody(t)
	work, _ := copyForNobody(t, os.Args[0], filepath.Base(os.Args[0]))

	// nobody's first run holds its one slot until READY is removed.
	readyDir, err := os.MkdirTemp("", "sfwatch-ready-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(readyDir)
	os.Chmod(readyDir, 0o777)
	hold := filepath.Join(readyDir, "hold")
	os.WriteFile(hold, nil, 0o666)
	var wg sync.WaitGroup
	var first result
	wg.Go(func() {
		script := fmt.Sprintf("while [ -e %s ]; do sleep 0.05; done", hold)
		first = runAsNobody(t, bin, dir, nil, "run", "--socket", d.socket, "--ringbuf-size", "65536", "--", "/bin/sh", "-c", script)
	})
	for deadline := time.Now().Add(20 * time.Second); len(runsGroups(t, d.socket, true)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first run never started")
		}
	}
	second := runAsNobody(t, bin, dir, nil, "run", "--socket", d.socket, "--ringbuf-size", "65536", "--", "true")
	os.Remove(hold)
	wg.Wait()
	if first.code != 0 {
		t.Errorf("first run: exit %d\n%s", first.code, first.stderr)
	}
	if second.code != exitFailed || strings.Count(second.stderr, "\n") != 1 || !strings.Contains(second.stderr, "runs going, the most allowed") {
		t.Errorf("second run at once: exit %d, stderr %q; want 125 and the limit", second.code, second.stderr)
	}

	big := runAsNobody(t, bin, dir, nil, "run", "--socket", d.socket, "--ringbuf-size", "2097152", "--", "true")
	if big.code != exitFailed || !strings.Contains(big.stderr, "--max-ring-per-user") {
		t.Errorf("a ring over the share: exit %d, stderr %q", big.code, big.stderr)
	}

	// The flood: 20000 calls into a 4 KiB ring, nobody's; at the same
	// time root's offsets run with the default ring.
	var flood result
	wg.Go(func() {
		flood = runAsNobodyEnv(t, bin, dir, workloadEnv(), nil, "run", "--socket", d.socket, "--quiet", "--ringbuf-size", "4096", "--", work, "loop", "1", "20000")
	})
	calm := sfwatch(t, workloadEnv(), "run", "--socket", d.socket, "--format", "json", "--", os.Args[0], "offsets")
	wg.Wait()
	if calls, _, lost := accountingNumbers(t, flood.stderr); flood.code != 0 || calls != 20000 || lost == 0 {
		t.Errorf("flooding run: exit %d, %d calls, %d lost; want 20000 calls, some lost\n%s", flood.code, calls, lost, flood.stderr)
	}
	if calls, events, lost := accountingNumbers(t, calm.stderr); calm.code != 0 || calls != 9 || events != 9 || lost != 0 {
		t.Errorf("root's run beside it: exit %d, %d calls, %d events, %d lost; want 9, 9, 0\n%s", calm.code, calls, events, lost, calm.stderr)
	}
	d.stop(t, syscall.SIGTERM)
}

// TestDaemonClientDaemonGone: the daemon stopped (SIGTERM) or killed
// (SIGKILL) mid-run: the client exits 125 within a second, with one line;
// the group is removed by the daemon, or, when it was killed, by the next
// daemon on the socket at its start; no program stays attached.
func TestDaemonClientDaemonGone(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			d := startClientDaemon(t)
			bin, dir := sfwatchForNobody(t)
			done := make(chan result, 1)
			go func() {
				done <- runAsNobody(t, bin, dir, nil, "run", "--socket", d.socket, "--", "sleep", "60")
			}()
			for deadline := time.Now().Add(20 * time.Second); len(runsGroups(t, d.socket, true)) == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the run never started")
				}
			}

			d.cmd.Process.Signal(sig)
			d.cmd.Wait()
			gone := time.Now()
			var r result
			select {
			case r = <-done:
			case <-time.After(slow(5 * time.Second)):
				t.Fatalf("the client did not exit after the daemon's %v", sig)
			}
			if took := time.Since(gone); took > slow(time.Second) {
				t.Errorf("the client exited %v after the daemon's end; want within a second", took)
			}
			if r.code != exitFailed || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "went away mid-run") {
				t.Errorf("client: exit %d, stderr %q; want 125 and one line", r.code, r.stderr)
			}
			left := runsGroups(t, d.socket, false)
			if sig == syscall.SIGTERM && len(left) != 0 {
				t.Errorf("groups left after SIGTERM: %v", left)
			}
			if sig == syscall.SIGKILL {
				if busy := runsGroups(t, d.socket, true); len(left) == 0 || len(busy) != 0 {
					t.Fatalf("groups after SIGKILL: %v, busy %v; want the run's, emptied by its client", left, busy)
				}
				next := startDaemon(t, d.lock, "--socket", d.socket, "--socket-mode", "0666", "--socket-group", "")
				if !strings.Contains(next.stderr.String(), fmt.Sprintf("removed %d run groups", len(left))) {
					t.Errorf("the next daemon did not say it removed the %d groups:\n%s", len(left), next.stderr.String())
				}
				next.stop(t, syscall.SIGTERM)
				if now := runsGroups(t, d.socket, false); len(now) != 0 {
					t.Errorf("groups left: %v", now)
				}
			}

			assertNothingLeft(t, d.cmd.Process.Pid)
		})
	}
}

// TestDaemonClientAttach: root's attach goes through the daemon: exactly
// the calls made in the group while it watches, and a subtree the daemon
// watches already is attached with sfwatch's own programs instead (said
// in one line; with --daemon, refused); nobody may not attach.
func TestDaemonClientAttach(t *testing.T) {
	testenv.RequirePrivileged(t)
	parent := ownedGroup(t)
	group := filepath.Join(parent.Path, "svc")
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Fatal(err)
	}
	attachN := func(t *testing.T, d *clientDaemon, extra ...string) (result, bool) {
		t.Helper()
		a := startSfwatch(t, append([]string{"attach", "--socket", d.socket, "--cgroup", group}, extra...)...)
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(a.stderr.String(), "sfwatch: watching cgroup"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) || a.cmd.ProcessState != nil {
				r := a.wait(t)
				return r, false
			}
		}
		loopIn(t, group, 300)
		a.cmd.Process.Signal(syscall.SIGTERM)
		return a.wait(t), true
	}

	d := startClientDaemon(t)
	r, ok := attachN(t, d)
	if calls, events, lost := accountingNumbers(t, r.stderr); !ok || r.code != 0 || calls != 300 || events != 300 || lost != 0 || strings.Contains(r.stderr, "own programs") {
		t.Errorf("attach through the daemon: exit %d, %d calls, %d events, %d lost; want 0 and 300, 300, 0\n%s", r.code, calls, events, lost, r.stderr)
	}
	bin, dir := sfwatchForNobody(t)
	n := runAsNobody(t, bin, dir, nil, "attach", "--socket", d.socket, "--cgroup", group)
	if n.code != exitFailed || strings.Count(n.stderr, "\n") != 1 || !strings.Contains(n.stderr, "attach is root's") {
		t.Errorf("attach as nobody: exit %d, stderr %q; want 125 and one line", n.code, n.stderr)
	}
	d.stop(t, syscall.SIGTERM)

	watching := startClientDaemon(t, "--watch", parent.Rel)
	r, ok = attachN(t, watching)
	if calls, _, _ := accountingNumbers(t, r.stderr); !ok || r.code != 0 || calls != 300 || !strings.Contains(r.stderr, "attaching with sfwatch's own programs") {
		t.Errorf("attach under a watched subtree: exit %d, %d calls; want 0, 300, and the line saying own programs\n%s", r.code, calls, r.stderr)
	}
	if r, _ := attachN(t, watching, "--daemon"); r.code != exitFailed || !strings.Contains(r.stderr, "which the daemon counts already") {
		t.Errorf("attach --daemon under a watched subtree: exit %d\n%s", r.code, r.stderr)
	}
	watching.stop(t, syscall.SIGTERM)
}
