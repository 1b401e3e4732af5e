package main

// Tests of `sfwatch attach`: it watches a group that exists already, sees
// exactly the calls made inside it (by a process moved in after attach
// started, too) and none from outside, exports the same metrics as run,
// and owns nothing: on SIGINT or SIGTERM it leaves the group and its
// processes as they were. Helpers are in helpers_attach_test.go and
// helpers_metrics_test.go (pm*).

import (
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
