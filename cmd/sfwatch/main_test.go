package main

// TestMain, and the helpers that run sfwatch: TestMain builds the binary once
// (or runs a workload, or prebuilds the C programs for a kernel guest);
// sfwatch and runWorkload run it and check that it left nothing behind (no
// group, no BPF program); parseJSONEvents and parseManifest read its events
// and a workload's account of its calls.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sfwatch/sfwatch/internal/cgroup"
)

// sfwatchBin is the sfwatch binary under test, built once by TestMain.
var sfwatchBin string

// TestMain either runs a workload (when re-executed by a test as the traced
// command) or builds sfwatch and runs the tests.
func TestMain(m *testing.M) {
	if os.Getenv(workloadEnvVar) != "" {
		os.Exit(workloadMain(os.Args[1], os.Args[2:]))
	}
	if dir := os.Getenv(prebuildEnvVar); dir != "" {
		os.Exit(prebuildTestPrograms(dir))
	}
	if dir := os.Getenv(prebuiltEnvVar); dir != "" {
		// A machine without Go or gcc (a kernel booted in qemu): everything
		// was built beforehand.
		sfwatchBin = filepath.Join(dir, "sfwatch")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "sfwatch-test-")
	if err != nil {
		panic(err)
	}
	sfwatchBin = filepath.Join(dir, "sfwatch")
	if out, err := exec.Command("go", "build", "-o", sfwatchBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building sfwatch: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished sfwatch process.
type result struct {
	stdout, stderr string
	code           int
	pid            int
}

// sfwatchTimeout bounds one sfwatch run of the tests.
const sfwatchTimeout = 3 * time.Minute

// waitDelay is every test command's exec.Cmd.WaitDelay: how long Wait goes
// on copying output after the process exited (or was killed) before it
// closes the pipes that an orphan still holds.
const waitDelay = 10 * time.Second

// sfwatch runs the binary with args and env additions, and checks that it
// left nothing behind.
func sfwatch(t *testing.T, env []string, args ...string) result {
	t.Helper()
	// A hang fails this test, rather than the whole binary at go test's
	// timeout with no word on which run hung.
	ctx, cancel := context.WithTimeout(context.Background(), sfwatchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sfwatchBin, args...)
	cmd.Env = append(os.Environ(), env...)
	// A process that sfwatch left behind may hold the output pipes open:
	// Run then returns this long after sfwatch exits, rather than never.
	cmd.WaitDelay = waitDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sfwatch %q did not exit within %v; stderr:\n%s", args, sfwatchTimeout, stderr.String())
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if cmd.Process != nil {
		r.pid = cmd.Process.Pid
	}
	if err != nil && r.code < 0 {
		t.Fatalf("running sfwatch: %v", err)
	}
	assertNothingLeft(t, r.pid)
	return r
}

// runWorkload returns `sfwatch run` arguments (flags, then -- and the
// command) that trace this test binary running the named workload; the
// workload's own arguments follow its name.
func runWorkload(t *testing.T, flags []string, name string, args ...string) result {
	t.Helper()
	argv := append([]string{"run"}, flags...)
	argv = append(append(argv, "--", os.Args[0], name), args...)
	return sfwatch(t, workloadEnv(), argv...)
}

// workloadEnv is what the environment needs, besides ours, for this test
// binary to run a workload. Asynchronous preemption stays on: its SIGURG
// interrupting a sendfile must not change the calls sfwatch counts.
func workloadEnv() []string {
	return []string{workloadEnvVar + "=1"}
}

// assertNothingLeft checks that sfwatch process pid left no cgroup and
// that no sfwatch program is still loaded without a process holding it.
//
// Other sfwatch processes may be running at the same time (parallel tests,
// other packages' tests): a program that a live process holds a descriptor
// of is theirs and in use. What is left behind is a program that nobody
// holds (pinned, or kept by the kernel); the freeing of a program whose
// last descriptor just closed may lag a moment, so that is waited for.
func assertNothingLeft(t *testing.T, pid int) {
	t.Helper()
	mount, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(mount, fmt.Sprintf("sfwatch-%d-*", pid)))
	if len(left) > 0 {
		t.Errorf("sfwatch (pid %d) left cgroups behind: %v", pid, left)
	}
	var orphans []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		orphans = orphanSfwatchPrograms(t)
		if len(orphans) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(orphans) > 0 {
		t.Errorf("sfwatch programs still loaded, held by no process: %v", orphans)
	}
}

// orphanSfwatchPrograms lists the loaded programs with sfwatch's names that
// no process but this one holds a descriptor of.
func orphanSfwatchPrograms(t *testing.T) []string {
	t.Helper()
	progs := loadedSfwatchProgramIDs(t)
	if len(progs) == 0 {
		return nil
	}
	holders := bpfProgramHolders()
	var orphans []string
	for id, name := range progs {
		held := false
		for _, p := range holders[uint32(id)] {
			held = held || p != os.Getpid()
		}
		if !held {
			orphans = append(orphans, fmt.Sprintf("%s (id %d)", name, id))
		}
	}
	return orphans
}

func loadedSfwatchProgramIDs(t *testing.T) map[ebpf.ProgramID]string {
	t.Helper()
	progs := map[ebpf.ProgramID]string{}
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && (strings.HasPrefix(info.Name, "sys_e") && strings.Contains(info.Name, "sendf") || info.Name == "signal_deliver") {
			progs[id] = info.Name
		}
	}
	return progs
}

// bpfProgramHolders maps a program id to the pids that hold a descriptor of
// it, or of a link to it, read from /proc/PID/fdinfo.
func bpfProgramHolders() map[uint32][]int {
	holders := map[uint32][]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			target, _ := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if target != "anon_inode:bpf-prog" && target != "anon_inode:bpf_link" {
				continue
			}
			info, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "fdinfo", fd.Name()))
			for _, line := range strings.Split(string(info), "\n") {
				if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
					if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
						holders[uint32(id)] = append(holders[uint32(id)], pid)
					}
				}
			}
		}
	}
	return holders
}

// jsonEvent is one line of --format json.
type jsonEvent struct {
	PID    uint32 `json:"pid"`
	TID    uint32 `json:"tid"`
	Comm   string `json:"comm"`
	OutFD  int32  `json:"out_fd"`
	InFD   int32  `json:"in_fd"`
	Offset *struct {
		Before *int64 `json:"before"`
		After  *int64 `json:"after"`
	} `json:"offset"`
	Count      uint64   `json:"count"`
	Ret        int64    `json:"ret"`
	Errno      *string  `json:"errno"`
	Class      string   `json:"class"`
	DurationNs *uint64  `json:"duration_ns"`
	StartNs    *uint64  `json:"start_ns"`
	TimeUnixNs *int64   `json:"time_unix_ns"`
	Violations []string `json:"violations"`
}

func parseJSONEvents(t *testing.T, data string) []jsonEvent {
	t.Helper()
	var evs []jsonEvent
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		if line == "" {
			continue
		}
		var e jsonEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// parseManifest reads the direct calls a workload printed on stdout.
func parseManifest(t *testing.T, data string) []directCall {
	t.Helper()
	var calls []directCall
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var c directCall
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("bad manifest line %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls
}
