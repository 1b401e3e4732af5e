package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// loopCall is what call i of the loop workload (one thread, alternate
// offsets) returns: NULL-offset calls read the file's next 4 KiB and
// return 0 at its end (then rewind); pointer calls read [0, 4096).
func loopCall(i int) (null bool, ret int64) {
	if i%2 == 1 {
		return false, 4096
	}
	if every := testworkload.FileSize/4096 + 1; (i/2+1)%every == 0 {
		return true, 0
	}
	return true, 4096
}

// TestDaemonEvents: with --events, every call of two watched sibling
// groups is written with its group's path, as JSON objects that parse and
// match the calls (count, descriptors, offsets, result) and as text lines
// that start with the path and a tab; the accounting line and /metrics
// count them, none lost, no violation (sfwatch_sendfile_violations_total
// per group). Without --events nothing is written, and there is no
// violations series.
func TestDaemonEvents(t *testing.T) {
	testenv.RequirePrivileged(t)
	p := ownedGroup(t)
	for _, sub := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(p.Path, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	lock := filepath.Join(dir, "daemon.lock")
	counts := map[string]int{p.Rel + "/a": 10, p.Rel + "/b": 25}
	run := func(args ...string) {
		addr := pmAddr(t)
		d := startDaemon(t, lock, append([]string{"--watch", p.Rel, "--metrics-addr", addr}, args...)...)
		loopIn(t, filepath.Join(p.Path, "a"), 10)
		loopIn(t, filepath.Join(p.Path, "b"), 25)
		m := pmScrape(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/metrics")
		for path := range counts {
			// The series needs events: without them, none.
			n, ok := m.get("sfwatch_sendfile_violations_total", "cgroup", path)
			if ok != (len(args) > 0) || n != 0 {
				t.Errorf("daemon %q: sfwatch_sendfile_violations_total{cgroup=%q} %v (present %v)", args, path, n, ok)
			}
		}
		if n := m.value(t, "sfwatch_events_lost_total"); n != 0 {
			t.Errorf("daemon %q: sfwatch_events_lost_total %d, want 0", args, n)
		}
		r := d.stop(t, syscall.SIGTERM)
		last := lines(r.stderr)[len(lines(r.stderr))-1]
		want := "sfwatch: 35 calls counted in the kernel in 2 groups (0 under _other)"
		if len(args) > 0 {
			want += ", 35 events delivered, 0 lost, 0 violations"
		}
		if r.code != 0 || last != want {
			t.Errorf("daemon %q: exit %d, last line %q, want 0 and %q", args, r.code, last, want)
		}
	}

	jsonFile := filepath.Join(dir, "events.json")
	run("--events", jsonFile, "--format", "json")
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	type offset struct{ Before, After *int64 }
	seen := map[string]int{}
	fds := map[string][2]int{}
	for _, line := range lines(string(data)) {
		var e struct {
			Cgroup       string
			Pid          int
			OutFd        int `json:"out_fd"`
			InFd         int `json:"in_fd"`
			Offset       *offset
			Count, Ret   int64
			Violations   []string
			DurationNs   *uint64 `json:"duration_ns"`
			StartNs      *uint64 `json:"start_ns"`
			Errno, Class any
			Tid          int
			Comm         string
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		i := seen[e.Cgroup]
		seen[e.Cgroup]++
		null, ret := loopCall(i)
		if e.Count != 4096 || e.Ret != ret || (e.Offset == nil) != null || len(e.Violations) != 0 {
			t.Errorf("%s call %d: %q; want count 4096, ret %d, NULL offset %v", e.Cgroup, i, line, ret, null)
		}
		if !null && (e.Offset.Before == nil || *e.Offset.Before != 0 || e.Offset.After == nil || *e.Offset.After != 4096) {
			t.Errorf("%s call %d: %q; want offset 0 => 4096", e.Cgroup, i, line)
		}
		if i == 0 {
			fds[e.Cgroup] = [2]int{e.OutFd, e.InFd}
		} else if fds[e.Cgroup] != [2]int{e.OutFd, e.InFd} {
			t.Errorf("%s call %d: descriptors %d, %d; the first call's %v", e.Cgroup, i, e.OutFd, e.InFd, fds[e.Cgroup])
		}
	}
	if len(seen) != len(counts) {
		t.Errorf("events for %v, want %v", seen, counts)
	}
	for path, n := range counts {
		if seen[path] != n {
			t.Errorf("%s: %d events, want %d", path, seen[path], n)
		}
	}

	textFile := filepath.Join(dir, "events.txt")
	run("--events", textFile)
	data, err = os.ReadFile(textFile)
	if err != nil {
		t.Fatal(err)
	}
	seen = map[string]int{}
	for _, line := range lines(string(data)) {
		path, call, ok := strings.Cut(line, "\t")
		if !ok || !strings.HasPrefix(call, "[pid ") || !strings.Contains(call, "] sendfile(") {
			t.Fatalf("%q: want PATH, a tab, then strace's line", line)
		}
		i := seen[path]
		seen[path]++
		null, ret := loopCall(i)
		if want := ", 4096) "; !strings.Contains(call, want) || !strings.HasSuffix(call, "= "+strconv.FormatInt(ret, 10)) ||
			strings.Contains(call, "NULL") != null || !null && !strings.Contains(call, "[0] => [4096]") {
			t.Errorf("%s call %d: %q; want ret %d, NULL offset %v", path, i, call, ret, null)
		}
	}
	for path, n := range counts {
		if seen[path] != n {
			t.Errorf("%s: %d text lines, want %d", path, seen[path], n)
		}
	}

	// Without --events: nothing is written, the line has no events.
	entries, _ := os.ReadDir(dir)
	run()
	after, _ := os.ReadDir(dir)
	if len(after) != len(entries) {
		t.Errorf("without --events: %d files in %s, then %d", len(entries), dir, len(after))
	}
}
