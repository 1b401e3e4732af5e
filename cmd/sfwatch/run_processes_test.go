package main

// Commands that start other processes: a double-forked setsid grandchild,
// forked net/http servers and nginx with its workers. Every process's calls
// are seen and attributed, and nothing outlives the run.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunGrandchild: a double-forked setsid grandchild is traced, and is
// gone once sfwatch has exited.
func TestRunGrandchild(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	ready := filepath.Join(t.TempDir(), "ready")
	r := runWorkload(t, []string{"--format", "json"}, "grandchild", ready)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	childPID := workloadPID(t, r.stdout)
	data, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	gpid, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatalf("ready file %q", data)
	}
	if gpid == childPID {
		t.Fatalf("grandchild pid %d is the child's", gpid)
	}
	out := lines(r.stderr)
	if len(out) != 4 || out[3] != accountingLine(3, 3, 0) {
		t.Fatalf("stderr: want 3 events and the accounting line:\n%s", r.stderr)
	}
	for _, e := range parseJSONEvents(t, strings.Join(out[:3], "\n")) {
		if e.PID != uint32(gpid) || e.TID != uint32(gpid) || e.Comm != testComm() {
			t.Errorf("event from pid %d tid %d (%s), want the grandchild %d", e.PID, e.TID, e.Comm, gpid)
		}
		if e.Offset == nil || *e.Offset.Before != 0 || *e.Offset.After != 4096 || e.Ret != 4096 || e.Count != 4096 {
			t.Errorf("event %+v, want [0] => [4096] = 4096", e)
		}
	}
	// Killed with the group before sfwatch exited; whoever inherited it
	// may take a moment to reap it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		state := procState(gpid)
		if state == "" || state == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after sfwatch exited (state %s)", gpid, state)
		}
	}
}

// TestRunForkServer: three forked net/http servers, one fetch each: three
// processes send the page with NULL-offset sendfile, all bytes accounted.
func TestRunForkServer(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	const servers, pageSize = 3, 64 << 10
	dir := t.TempDir()
	ready, events, report := filepath.Join(dir, "ready"), filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	s := startSfwatch(t, "run", "--format", "json", "-o", events, "--report", report, "--",
		os.Args[0], "forkserver", ready, strconv.Itoa(servers))
	var addrs []string
	if err := json.Unmarshal(waitForFile(t, ready, s), &addrs); err != nil || len(addrs) != servers {
		t.Fatalf("ready file: %v %v", addrs, err)
	}
	page := make([]byte, pageSize)
	for i := range page {
		page[i] = byte('a' + i%26)
	}
	for _, addr := range addrs {
		if body := fetch(t, "http://"+addr+"/page"); !bytes.Equal(body, page) {
			t.Errorf("%s/page: %d bytes, not the page", addr, len(body))
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := s.wait(t)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	// net/http writes the first 512 bytes itself (response.ReadFrom sniffs
	// them), and the rest with sendfile.
	const want = servers * (pageSize - 512)
	bytesByPID := map[uint32]int64{}
	for _, e := range parseJSONEvents(t, string(data)) {
		if e.Ret > 0 && e.Offset == nil {
			bytesByPID[e.PID] += e.Ret
		} else if e.Errno == nil || *e.Errno != "EAGAIN" {
			t.Errorf("unexpected event %+v", e)
		}
	}
	total := int64(0)
	for _, b := range bytesByPID {
		total += b
	}
	if len(bytesByPID) != servers || total != want {
		t.Errorf("NULL-offset bytes by pid %v (total %d), want %d pids and %d bytes", bytesByPID, total, servers, want)
	}
	rep := readReport(t, report)
	if s := rep.Summary; *s.Bytes != want || *s.Events != *s.Calls || *s.Lost != 0 || *s.Violations != 0 || *s.OffsetPtr != 0 {
		t.Errorf("report summary: bytes %d events %d calls %d lost %d violations %d offset_ptr %d; want bytes %d",
			*s.Bytes, *s.Events, *s.Calls, *s.Lost, *s.Violations, *s.OffsetPtr, want)
	}
}

// TestRunNginx: nginx with sendfile on and two forked workers; its workers
// send with a pointer offset, every byte fetched is accounted for.
func TestRunNginx(t *testing.T) {
	testenv.RequirePrivileged(t)
	nginx := testenv.NeedTool(t, "nginx")
	t.Parallel()
	const fetches, size = 4, 1 << 20
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	file := make([]byte, size)
	for i := range file {
		file[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(www, "big.bin"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	pidFile := filepath.Join(dir, "nginx.pid")
	conf := filepath.Join(dir, "nginx.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root;
error_log stderr;
pid %[1]s/nginx.pid;
events { worker_connections 64; }
http {
	sendfile on;
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s/www;
	}
}
`, dir, port)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	events, report := filepath.Join(dir, "events.json"), filepath.Join(dir, "report.json")
	s := startSfwatch(t, "run", "--format", "json", "-o", events, "--report", report, "--",
		nginx, "-c", conf, "-p", dir+"/", "-e", "stderr")
	master, _ := strconv.Atoi(strings.TrimSpace(string(waitForFile(t, pidFile, s))))
	url := fmt.Sprintf("http://127.0.0.1:%d/big.bin", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %d; stderr:\n%s", port, s.stderr.String())
		}
	}
	// The master writes its pid file and listens before it forks.
	workers := map[uint32]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(workers) != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nginx master %d has workers %v, want 2", master, workers)
		}
		clear(workers)
		for _, f := range strings.Fields(readFileString(fmt.Sprintf("/proc/%d/task/%d/children", master, master))) {
			pid, _ := strconv.Atoi(f)
			workers[uint32(pid)] = true
		}
	}
	for range fetches {
		if body := fetch(t, url); !bytes.Equal(body, file) {
			t.Fatalf("GET %s: %d bytes, not the file", url, len(body))
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil { // graceful shutdown
		t.Fatal(err)
	}
	r := s.wait(t)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseJSONEvents(t, string(data))
	if want := accountingLine(uint64(len(evs)), uint64(len(evs)), 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want only %q", r.stderr, want)
	}
	var sent, eagain int64
	for _, e := range evs {
		if !workers[e.PID] || e.Comm != "nginx" {
			t.Errorf("event from pid %d (%s), want one of the workers %v", e.PID, e.Comm, workers)
		}
		if len(e.Violations) != 0 || e.Offset == nil || e.Offset.Before == nil || e.Offset.After == nil {
			t.Errorf("event %+v: want a pointer offset read before and after, no violation", e)
			continue
		}
		switch {
		case e.Ret > 0:
			sent += e.Ret
			if *e.Offset.After != *e.Offset.Before+e.Ret {
				t.Errorf("offset %d => %d with ret %d", *e.Offset.Before, *e.Offset.After, e.Ret)
			}
		case e.Errno != nil && *e.Errno == "EAGAIN": // a full socket buffer: nginx waits and retries
			eagain++
			if *e.Offset.After != *e.Offset.Before {
				t.Errorf("offset %d => %d with EAGAIN", *e.Offset.Before, *e.Offset.After)
			}
		default:
			t.Errorf("unexpected event %+v", e)
		}
	}
	if eagain > 0 {
		t.Logf("nginx got EAGAIN %d times", eagain)
	}
	if sent != fetches*size {
		t.Errorf("nginx sent %d bytes with sendfile, want the %d fetched", sent, fetches*size)
	}
	rep := readReport(t, report)
	if s := rep.Summary; *s.Bytes != fetches*size || *s.Calls != uint64(len(evs)) || *s.Events != *s.Calls || *s.Lost != 0 ||
		*s.Violations != 0 || *s.OffsetNull != 0 || *s.Errors != uint64(eagain) {
		t.Errorf("report summary: %+v", rep.Summary)
	}
}
