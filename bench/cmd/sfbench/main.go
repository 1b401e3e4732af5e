// Command sfbench is sfwatch's benchmark: it runs each workload under each
// observer (untraced, the floor, sfwatch three ways, bpftrace, perf trace,
// strace two ways), alternating observers within every repetition, and
// prints one table per workload: median and spread of the workload's own
// figure (loop time, or requests per second), its ratio to untraced, the
// observer's own CPU per event, its peak RSS, and what it delivered and lost.
//
// It needs root, and the binaries built by `make bench` in -bin. See
// bench/README.md.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type config struct {
	bin        string
	out        string
	n          int
	reps       int
	serverReps int
	toolReps   int
	duration   time.Duration
	warmup     time.Duration
	wrkThreads int
	wrkConns   int
	workloads  string
	observers  string
	quick      bool
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bench/.bin", "directory with sfwatch, floor, sendfileloop and fileserver")
	flag.StringVar(&c.out, "out", "bench/.out", "directory for raw results (runs.json) and the table (table.md)")
	flag.IntVar(&c.n, "n", 1_000_000, "sendfile calls per loop run (slow observers make fewer, see the table)")
	flag.IntVar(&c.reps, "reps", 7, "repetitions of each loop run")
	flag.IntVar(&c.serverReps, "server-reps", 3, "repetitions of each server run")
	flag.IntVar(&c.toolReps, "tool-reps", 2, "at most this many repetitions for bpftrace, perf trace and strace (and their untraced baselines)")
	flag.DurationVar(&c.duration, "duration", 4*time.Second, "measured wrk run per server run")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured wrk run before each measured one")
	flag.IntVar(&c.wrkThreads, "wrk-threads", 1, "wrk -t")
	flag.IntVar(&c.wrkConns, "wrk-conns", 16, "wrk -c")
	flag.StringVar(&c.workloads, "workloads", "all", "comma-separated workload names, or all")
	flag.StringVar(&c.observers, "observers", "all", "comma-separated observer names, or all (untraced always runs)")
	flag.BoolVar(&c.quick, "quick", false, "a short run: 200k calls, 2 loop reps, 1 server rep of 3 s")
	flag.Parse()
	if c.quick {
		c.n, c.reps, c.serverReps, c.toolReps, c.duration = 200_000, 2, 1, 1, 2*time.Second
	}
	if err := run(&c); err != nil {
		fmt.Fprintln(os.Stderr, "sfbench:", err)
		os.Exit(1)
	}
}

// ---- workloads -----------------------------------------------------------

type workload struct {
	name    string
	about   string
	threads int    // loop: calling threads; 0 for a server
	server  string // "go" or "nginx"
	file    string // the file wrk fetches
	comm    string // the workload's command name, for bpftrace's filter
}

func (w *workload) loop() bool { return w.threads > 0 }

var workloads = []*workload{
	{name: "loop-1t", about: "sendfile 4 KiB file->/dev/null, half NULL / half pointer offset, 1 thread", threads: 1, comm: "sendfileloop"},
	{name: "loop-4t", about: "same, 4 threads (GOMAXPROCS=4 on 2 cores)", threads: 4, comm: "sendfileloop"},
	{name: "go-4k", about: "Go net/http FileServer, 4 KiB file, wrk on loopback", server: "go", file: "4k.bin", comm: "fileserver"},
	{name: "go-1m", about: "Go net/http FileServer, 1 MiB file, wrk on loopback", server: "go", file: "1m.bin", comm: "fileserver"},
	{name: "nginx-4k", about: "nginx (sendfile on, 2 workers), 4 KiB file, wrk on loopback", server: "nginx", file: "4k.bin", comm: "nginx"},
	{name: "nginx-1m", about: "nginx (sendfile on, 2 workers), 1 MiB file, wrk on loopback", server: "nginx", file: "1m.bin", comm: "nginx"},
}

// ---- observers -----------------------------------------------------------

// target is what an observer wraps: the workload's command, where a stream
// goes, and the workload's command name.
type target struct {
	cmd    []string
	out    string // a tmpfs file for observers that write their stream there
	script string // bpftrace's script file
}

type observer struct {
	name  string
	about string
	tool  string // the program it needs
	// slow divides the loop's call count: the tracers that take minutes
	// for a million calls make fewer, and are compared with an untraced
	// run of the same count.
	slow int
	wrap func(b *bench, t *target) []string
	// stream: the observer writes one line per event to t.out, which is
	// counted (events delivered, losses it reports) and removed.
	stream    bool
	isEvent   func(line []byte) bool
	lostCount *regexp.Regexp // a line reporting N lost events
	sfwatch   bool           // reads sfwatch's accounting line
}

var (
	bpftraceLost = regexp.MustCompile(`^Lost (\d+) events`)
	perfLost     = regexp.MustCompile(`LOST (\d+) events!`)
	perfResult   = regexp.MustCompile(`\)\s+= `)
)

var observers = []*observer{
	{name: "untraced", about: "the workload alone", wrap: func(b *bench, t *target) []string { return t.cmd }},
	{name: "floor", about: "both tracepoints attached, programs return at once (bench/floor)", tool: "floor",
		wrap: func(b *bench, t *target) []string { return append([]string{b.path("floor"), "--"}, t.cmd...) }},
	{name: "sfwatch", about: "sfwatch run -o /dev/null: full text stream, every event decoded and validated", tool: "sfwatch", sfwatch: true,
		wrap: func(b *bench, t *target) []string {
			return append([]string{b.path("sfwatch"), "run", "-o", "/dev/null", "--"}, t.cmd...)
		}},
	{name: "sfwatch-json", about: "sfwatch run --format json -o /dev/null: full JSON Lines stream", tool: "sfwatch", sfwatch: true,
		wrap: func(b *bench, t *target) []string {
			return append([]string{b.path("sfwatch"), "run", "--format", "json", "-o", "/dev/null", "--"}, t.cmd...)
		}},
	{name: "sfwatch-quiet", about: "sfwatch run --quiet: events decoded, validated, aggregated; no output", tool: "sfwatch", sfwatch: true,
		wrap: func(b *bench, t *target) []string {
			return append([]string{b.path("sfwatch"), "run", "--quiet", "--"}, t.cmd...)
		}},
	{name: "sfwatch-sample100", about: "sfwatch run --sample 100 -o /dev/null: one event per 100 calls, exact totals", tool: "sfwatch", sfwatch: true,
		wrap: func(b *bench, t *target) []string {
			return append([]string{b.path("sfwatch"), "run", "--sample", "100", "-o", "/dev/null", "--"}, t.cmd...)
		}},
	{name: "daemon-outside", about: "a call outside every watched subtree of a daemon watching three (bench/cmd/daemonbench)", tool: "daemonbench",
		wrap: func(b *bench, t *target) []string { return append([]string{b.path("daemonbench"), "--"}, t.cmd...) }},
	{name: "daemon-watched", about: "a call inside one of them: the daemon's totals only, no events", tool: "daemonbench",
		wrap: func(b *bench, t *target) []string {
			return append([]string{b.path("daemonbench"), "-watched", "--"}, t.cmd...)
		}},
	{name: "bpftrace", about: "bpftrace, enter+exit tracepoints paired per tid, one printf per call (bench/observers/sendfile.bt)", tool: "bpftrace", slow: 5,
		stream: true, isEvent: func(l []byte) bool { return bytes.HasPrefix(l, []byte("[pid ")) }, lostCount: bpftraceLost,
		wrap: func(b *bench, t *target) []string {
			return []string{"bpftrace", "-o", t.out, t.script, "-c", strings.Join(t.cmd, " ")}
		}},
	{name: "perf-trace", about: "perf trace -e sendfile64 (raw_syscalls tracepoints, filtered in perf)", tool: "perf", slow: 10,
		stream: true, isEvent: func(l []byte) bool { return bytes.Contains(l, []byte("sendfile")) && perfResult.Match(l) },
		lostCount: perfLost,
		wrap: func(b *bench, t *target) []string {
			return append([]string{"perf", "trace", "-e", "sendfile64", "-o", t.out, "--"}, t.cmd...)
		}},
	{name: "strace", about: "strace -f -e trace=sendfile (ptrace stop at every syscall)", tool: "strace", slow: 50,
		stream: true, isEvent: straceEvent,
		wrap: func(b *bench, t *target) []string {
			return append([]string{"strace", "-f", "-e", "trace=sendfile", "-o", t.out, "--"}, t.cmd...)
		}},
	{name: "strace-seccomp", about: "strace -f --seccomp-bpf -e trace=sendfile (stops at sendfile only)", tool: "strace", slow: 50,
		stream: true, isEvent: straceEvent,
		wrap: func(b *bench, t *target) []string {
			return append([]string{"strace", "-f", "--seccomp-bpf", "-e", "trace=sendfile", "-o", t.out, "--"}, t.cmd...)
		}},
}

// straceEvent: one call is one line, or an "<unfinished ...>" line and its
// "resumed>" line when threads interleave; count the line with the result.
func straceEvent(l []byte) bool {
	return bytes.Contains(l, []byte("sendfile")) && !bytes.Contains(l, []byte("<unfinished"))
}

// bpftraceScript is the equivalent of sfwatch's BPF side in bpftrace: the
// same two tracepoints, the arguments and *offset remembered per thread at
// entry, one line per call at exit with *offset again and the duration. The
// workload's command name stands in for sfwatch's cgroup filter.
const bpftraceScript = `// sfbench: sendfile calls of COMM, as sfwatch sees them.
tracepoint:syscalls:sys_enter_sendfile64 /comm == "COMM"/
{
	$before = (int64)0;
	if (args->offset != 0) {
		$before = *(int64 *)uptr(args->offset);
	}
	@call[tid] = (nsecs, args->out_fd, args->in_fd, args->offset, args->count, $before);
}

tracepoint:syscalls:sys_exit_sendfile64 /@call[tid].0/
{
	$c = @call[tid];
	$after = (int64)0;
	if ($c.3 != 0) {
		$after = *(int64 *)uptr($c.3);
	}
	printf("[pid %d<%s>] sendfile(%d, %d, %lx [%ld] => [%ld], %lu) = %ld <%lu>\n",
		tid, comm, $c.1, $c.2, $c.3, $c.5, $after, $c.4, args->ret, nsecs - $c.0);
	delete(@call[tid]);
}
`

// ---- one run -------------------------------------------------------------

// runResult is one observer on one workload once.
type runResult struct {
	Workload string  `json:"workload"`
	Observer string  `json:"observer"`
	Rep      int     `json:"rep"`
	N        int     `json:"n,omitempty"`         // loop: calls made
	Seconds  float64 `json:"seconds,omitempty"`   // loop: time of the loop alone
	ReqPerS  float64 `json:"req_per_s,omitempty"` // server: wrk's figure
	Requests int64   `json:"requests,omitempty"`
	WrkErrs  int64   `json:"wrk_errors,omitempty"`
	WallS    float64 `json:"wall_s"` // the observer process, start to exit
	// CPU of the observer process alone, its children excluded.
	CPUNs   int64  `json:"cpu_ns"`
	CPUHow  string `json:"cpu_how"` // "rusage-minus-workload" (µs) or "proc-stat" (10 ms ticks)
	RSSKiB  int64  `json:"rss_kib"` // VmHWM of the observer process
	Calls   int64  `json:"calls"`   // calls made (loop) or counted (sfwatch); -1 unknown
	Events  int64  `json:"events"`  // events delivered; -1 unknown
	Lost    int64  `json:"lost"`    // events the observer says it lost; -1 if it does not say
	Sampled int64  `json:"sampled_out,omitempty"`
	Err     string `json:"error,omitempty"`
	// Foreign is the CPU (in CPUs) that processes other than the run's
	// own used meanwhile; Attempts counts runs discarded for it plus one.
	Foreign   float64 `json:"foreign_cpus"`
	Attempts  int     `json:"attempts"`
	Disturbed bool    `json:"disturbed,omitempty"` // disturbed in every attempt
}

type bench struct {
	c     *config
	tmp   string // tmpfs scratch
	www   string
	nginx string // nginx prefix dir
	runs  []runResult
	start time.Time
	// disturbed counts runs done again because others used the machine.
	disturbed int
	// startupNs is sfwatch's own CPU for a run with no calls at all.
	startupNs float64
}

func (b *bench) path(name string) string { return filepath.Join(b.c.bin, name) }

// proc is what running one observer process yields.
type proc struct {
	stdout, stderr []byte
	wall           time.Duration
	rusageNs       int64 // user+sys of the process and every child it reaped
	statTicks      int64 // user+sys of the process alone, in clock ticks
	hwmKiB         int64
	exit           int
}

// spawn runs argv in its own process group and measures it. during, when
// set, runs while the process lives (a server's load); its error is
// returned after the process has been stopped.
func spawn(argv []string, timeout time.Duration, during func(pid int) error) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	killAll := func() { syscall.Kill(-pid, syscall.SIGKILL) }
	timer := time.AfterFunc(timeout, killAll)
	defer timer.Stop()

	hwm := make(chan int64, 1)
	stopPoll := make(chan struct{})
	go func() {
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readHWM(pid); v > peak {
				peak = v
			}
			select {
			case <-stopPoll:
				hwm <- peak
				return
			case <-t.C:
			}
		}
	}()

	var duringErr error
	if during != nil {
		if duringErr = during(pid); duringErr != nil {
			killAll()
		}
	}
	// Wait for the exit without reaping: the zombie's /proc/PID/stat
	// still holds its own CPU time, separate from its children's.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	ticks := readStatTicks(pid)
	close(stopPoll)
	p := &proc{statTicks: ticks, hwmKiB: <-hwm}
	err := cmd.Wait()
	p.wall = time.Since(start)
	p.stdout, p.stderr = stdout.Bytes(), stderr.Bytes()
	if st := cmd.ProcessState; st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			p.rusageNs = ru.Utime.Nano() + ru.Stime.Nano()
			if p.hwmKiB == 0 {
				p.hwmKiB = ru.Maxrss
			}
		}
		p.exit = st.ExitCode()
	}
	if duringErr != nil {
		return p, duringErr
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return p, err
	}
	return p, nil
}

func readHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// readStatTicks returns utime+stime (fields 14 and 15) of a process.
func readStatTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

const clockTick = int64(10 * time.Millisecond) // USER_HZ = 100

// ownCPU is the observer's own CPU time: what wait4 reported for it and its
// reaped children, less what the workload reported for itself (µs
// precision). An observer that never reaps its child (perf trace leaves it
// to init) gets no children's time from wait4: then the zombie's own
// utime+stime from /proc/PID/stat, in 10 ms ticks, is used instead.
func ownCPU(p *proc, workloadNs int64) (int64, string) {
	ticks := p.statTicks * clockTick
	if sub := p.rusageNs - workloadNs; p.statTicks >= 0 && sub >= ticks-2*clockTick {
		return sub, "rusage-minus-workload"
	}
	return ticks, "proc-stat"
}

var accounting = regexp.MustCompile(`sfwatch: (\d+) calls counted in the kernel, (\d+) events delivered, (\d+) lost(?:, (\d+) sampled out)?`)

// account fills what the observer delivered and lost.
func (b *bench) account(o *observer, p *proc, t *target, r *runResult) {
	r.Calls, r.Events, r.Lost = -1, -1, -1
	switch {
	case o.sfwatch:
		m := accounting.FindSubmatch(p.stderr)
		if m == nil {
			r.Err = appendErr(r.Err, "no accounting line from sfwatch")
			return
		}
		r.Calls = atoi(m[1])
		r.Events = atoi(m[2])
		r.Lost = atoi(m[3])
		if m[4] != nil {
			r.Sampled = atoi(m[4])
		}
	case o.stream:
		defer os.Remove(t.out)
		f, err := os.Open(t.out)
		if err != nil {
			r.Err = appendErr(r.Err, err.Error())
			return
		}
		defer f.Close()
		var events, lost int64
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if o.isEvent(line) {
				events++
			}
			if o.lostCount != nil {
				if m := o.lostCount.FindSubmatch(line); m != nil {
					lost += atoi(m[1])
				}
			}
		}
		if err := sc.Err(); err != nil {
			r.Err = appendErr(r.Err, "reading stream: "+err.Error())
		}
		r.Events = events
		if o.lostCount != nil {
			r.Lost = lost
		}
	}
}

func appendErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func atoi(b []byte) int64 {
	v, _ := strconv.ParseInt(string(b), 10, 64)
	return v
}

// loopResult is what sendfileloop prints.
type loopResult struct {
	Calls     int64 `json:"calls"`
	ElapsedNs int64 `json:"elapsed_ns"`
	CPUNs     int64 `json:"cpu_ns"`
	Short     int64 `json:"short"`
}

func (b *bench) runLoop(w *workload, o *observer, n, rep int) runResult {
	r := runResult{Workload: w.name, Observer: o.name, Rep: rep, N: n}
	t := &target{
		cmd:    []string{b.path("sendfileloop"), "-n", strconv.Itoa(n), "-threads", strconv.Itoa(w.threads), "-dir", b.tmp},
		out:    filepath.Join(b.tmp, "stream.out"),
		script: b.scriptFor(w),
	}
	p, err := spawn(o.wrap(b, t), 15*time.Minute, nil)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.WallS = p.wall.Seconds()
	r.RSSKiB = p.hwmKiB
	var lr loopResult
	if line := lastJSONLine(p.stdout); line == nil || json.Unmarshal(line, &lr) != nil {
		r.Err = fmt.Sprintf("no result from sendfileloop (exit %d): %s", p.exit, tail(p.stderr))
		return r
	}
	if lr.Short != 0 {
		r.Err = appendErr(r.Err, fmt.Sprintf("%d short transfers", lr.Short))
	}
	r.Seconds = float64(lr.ElapsedNs) / 1e9
	if o.name == "untraced" {
		r.CPUNs, r.CPUHow = 0, "none"
	} else {
		r.CPUNs, r.CPUHow = ownCPU(p, lr.CPUNs)
	}
	b.account(o, p, t, &r)
	if r.Calls < 0 {
		r.Calls = lr.Calls
	}
	return r
}

func (b *bench) runServer(w *workload, o *observer, rep int) runResult {
	r := runResult{Workload: w.name, Observer: o.name, Rep: rep}
	port, err := freePort()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pidfile := filepath.Join(b.tmp, "server.pid")
	stats := filepath.Join(b.tmp, "server.stats")
	os.Remove(pidfile)
	os.Remove(stats)
	t := &target{out: filepath.Join(b.tmp, "stream.out"), script: b.scriptFor(w)}
	switch w.server {
	case "go":
		t.cmd = []string{b.path("fileserver"), "-addr", addr, "-root", b.www, "-pidfile", pidfile, "-stats", stats}
	case "nginx":
		conf, err := b.nginxConf(addr, pidfile)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		t.cmd = []string{"nginx", "-p", b.nginx, "-c", conf, "-e", "stderr"}
	}
	// bpftrace -c wants an unambiguous path.
	if path, err := exec.LookPath(t.cmd[0]); err == nil {
		t.cmd[0] = path
	}
	url := "http://" + addr + "/" + w.file
	p, err := spawn(o.wrap(b, t), 5*time.Minute, func(pid int) error {
		if err := waitReady(url, pid, 90*time.Second); err != nil {
			return err
		}
		if b.c.warmup > 0 {
			if _, err := b.wrk(url, b.c.warmup); err != nil {
				return err
			}
		}
		res, err := b.wrk(url, b.c.duration)
		if err != nil {
			return err
		}
		r.ReqPerS, r.Requests, r.WrkErrs = res.reqPerS, res.requests, res.errors
		return stopServer(pidfile)
	})
	if p != nil {
		r.WallS = p.wall.Seconds()
		r.RSSKiB = p.hwmKiB
	}
	if err != nil {
		r.Err = appendErr(r.Err, err.Error()+": "+tail(p.stderr))
		return r
	}
	switch {
	case o.name == "untraced":
		r.CPUNs, r.CPUHow = 0, "none"
	case w.server == "go":
		var st struct {
			CPUNs int64 `json:"cpu_ns"`
		}
		if b, err := os.ReadFile(stats); err == nil && json.Unmarshal(b, &st) == nil {
			r.CPUNs, r.CPUHow = ownCPU(p, st.CPUNs)
		} else {
			r.CPUNs, r.CPUHow = p.statTicks*clockTick, "proc-stat"
		}
	default:
		r.CPUNs, r.CPUHow = p.statTicks*clockTick, "proc-stat"
	}
	b.account(o, p, t, &r)
	if r.Calls < 0 && r.Events >= 0 {
		r.Calls = r.Events + max(r.Lost, 0)
	}
	return r
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	return s
}

func lastJSONLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.HasPrefix(lines[i], []byte("{")) {
			return lines[i]
		}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls url until it answers 200, the observer exits, or the
// timeout (bpftrace takes seconds to start).
func waitReady(url string, pid int, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if exited(pid) {
			return fmt.Errorf("observer exited before the server answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server at %s not ready after %v", url, timeout)
}

func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

func stopServer(pidfile string) error {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return fmt.Errorf("reading server pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("server pid file: %w", err)
	}
	return syscall.Kill(pid, syscall.SIGTERM)
}

type wrkResult struct {
	reqPerS  float64
	requests int64
	errors   int64
}

var (
	wrkRate     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func (b *bench) wrk(url string, d time.Duration) (wrkResult, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	out, err := exec.Command("wrk", "-t", strconv.Itoa(b.c.wrkThreads), "-c", strconv.Itoa(b.c.wrkConns),
		"-d", fmt.Sprintf("%ds", secs), url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, tail(out))
	}
	var r wrkResult
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in %q", tail(out))
	}
	r.reqPerS, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkRequests.FindSubmatch(out); m != nil {
		r.requests = atoi(m[1])
	}
	if m := wrkSocket.FindSubmatch(out); m != nil {
		r.errors = atoi(m[1]) + atoi(m[2]) + atoi(m[3]) + atoi(m[4])
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		r.errors += atoi(m[1])
	}
	return r, nil
}

// ---- set-up --------------------------------------------------------------

func (b *bench) scriptFor(w *workload) string {
	p := filepath.Join(b.tmp, w.comm+".bt")
	if _, err := os.Stat(p); err != nil {
		os.WriteFile(p, []byte(strings.ReplaceAll(bpftraceScript, "COMM", w.comm)), 0o644)
	}
	return p
}

const nginxTemplate = `# sfbench: nginx serving WWW with sendfile.
daemon off;
master_process on;
worker_processes 2;
user root;
pid PIDFILE;
error_log stderr warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 100000000;
	default_type application/octet-stream;
	client_body_temp_path PREFIX/body;
	proxy_temp_path PREFIX/proxy;
	fastcgi_temp_path PREFIX/fastcgi;
	uwsgi_temp_path PREFIX/uwsgi;
	scgi_temp_path PREFIX/scgi;
	server {
		listen ADDR;
		root WWW;
		location / { }
	}
}
`

func (b *bench) nginxConf(addr, pidfile string) (string, error) {
	conf := strings.NewReplacer("PIDFILE", pidfile, "PREFIX", b.nginx, "ADDR", addr, "WWW", b.www).Replace(nginxTemplate)
	p := filepath.Join(b.nginx, "nginx.conf")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

func (b *bench) setup() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF, cgroups, ptrace of children)")
	}
	for _, name := range []string{"sfwatch", "floor", "daemonbench", "sendfileloop", "fileserver"} {
		if _, err := os.Stat(b.path(name)); err != nil {
			return fmt.Errorf("%s: %w (build with make bench)", b.path(name), err)
		}
	}
	// Scratch space on tmpfs: the loop's source file, the served files,
	// and the tracers' streams, so that no disk is involved.
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = os.TempDir()
	}
	tmp, err := os.MkdirTemp(base, "sfbench-")
	if err != nil {
		return err
	}
	b.tmp = tmp
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	b.www = filepath.Join(tmp, "www")
	b.nginx = filepath.Join(tmp, "nginx")
	for _, d := range []string{b.www, b.nginx} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for name, size := range map[string]int{"4k.bin": 4 << 10, "1m.bin": 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := os.WriteFile(filepath.Join(b.www, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ---- the matrix ----------------------------------------------------------

func selected[T any](all []T, name func(T) string, list string) []T {
	if list == "" || list == "all" {
		return all
	}
	want := strings.Split(list, ",")
	var out []T
	for _, x := range all {
		if slices.Contains(want, name(x)) {
			out = append(out, x)
		}
	}
	return out
}

func run(c *config) error {
	b := &bench{c: c, start: time.Now()}
	if err := b.setup(); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	// Orphans (perf trace's workload) come to us, to be reaped and counted.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming a subreaper: %w", err)
	}
	b.startupNs = b.sfwatchStartup()

	obs := selected(observers, func(o *observer) string { return o.name }, c.observers)
	if obs[0].name != "untraced" {
		obs = append([]*observer{observers[0]}, obs...)
	}
	var missing []string
	obs = slices.DeleteFunc(obs, func(o *observer) bool {
		if o.tool == "" || o.tool == "floor" || o.tool == "sfwatch" || o.tool == "daemonbench" {
			return false
		}
		if _, err := exec.LookPath(o.tool); err != nil {
			missing = append(missing, o.name)
			return true
		}
		return false
	})
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "sfbench: skipping %s: tool not installed\n", strings.Join(missing, ", "))
	}
	wls := selected(workloads, func(w *workload) string { return w.name }, c.workloads)
	needWrk := slices.ContainsFunc(wls, func(w *workload) bool { return !w.loop() })
	if needWrk {
		for _, tool := range []string{"wrk", "nginx"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("%s is needed for the server workloads: %w", tool, err)
			}
		}
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}

	for _, w := range wls {
		reps := c.reps
		if !w.loop() {
			reps = c.serverReps
		}
		// One slot per (observer, call count); untraced runs once per
		// call count that any observer uses, for a like-for-like ratio.
		type slot struct {
			o *observer
			n int
		}
		var slots []slot
		counts := map[int]bool{}
		for _, o := range obs {
			n := c.n
			if w.loop() && o.slow > 1 {
				n = c.n / o.slow
			}
			if o.name == "untraced" {
				continue
			}
			slots = append(slots, slot{o, n})
			counts[n] = true
		}
		for _, n := range slices.Sorted(mapKeys(counts)) {
			if n == c.n || !counts[c.n] {
				continue
			}
			slots = append(slots, slot{observers[0], n})
		}
		slots = append([]slot{{observers[0], c.n}}, slots...)
		// The comparison tools (slow on the loop: bpftrace, perf, strace)
		// and the untraced runs they are compared with get fewer
		// repetitions than sfwatch, the floor and the main baseline.
		slotReps := func(s slot) int {
			if s.o.slow > 1 || (w.loop() && s.n != c.n) || (!w.loop() && s.o.tool != "" && s.o.tool != "sfwatch" && s.o.tool != "floor") {
				return min(reps, c.toolReps)
			}
			return reps
		}
		limit := 0.25
		if !w.loop() {
			limit = 0.5 // softirq work for loopback traffic shows up as kernel threads
		}
		for rep := range reps {
			// Rotate the order every repetition, so that no observer always
			// follows the same one.
			for i := range slots {
				s := slots[(i+rep)%len(slots)]
				if rep >= slotReps(s) {
					continue
				}
				r := b.measured(limit, func() runResult {
					if w.loop() {
						return b.runLoop(w, s.o, s.n, rep)
					}
					return b.runServer(w, s.o, rep)
				})
				b.runs = append(b.runs, r)
				logRun(&r)
			}
		}
		if err := b.save(); err != nil {
			return err
		}
	}
	table := b.table(wls, obs)
	fmt.Print(table)
	return os.WriteFile(filepath.Join(c.out, "table.md"), []byte(table), 0o644)
}

func mapKeys(m map[int]bool) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func logRun(r *runResult) {
	what := fmt.Sprintf("%.3fs n=%d", r.Seconds, r.N)
	if r.ReqPerS > 0 {
		what = fmt.Sprintf("%.0f req/s", r.ReqPerS)
	}
	fmt.Fprintf(os.Stderr, "sfbench: %-9s rep %d %-18s %-22s cpu %6.1fms rss %6.1fMiB events %d lost %d wall %.1fs %s\n",
		r.Workload, r.Rep, r.Observer, what, float64(r.CPUNs)/1e6, float64(r.RSSKiB)/1024, r.Events, r.Lost, r.WallS, r.Err)
}

func (b *bench) save() error {
	data, err := json.MarshalIndent(struct {
		Date    string      `json:"date"`
		Machine string      `json:"machine"`
		Config  any         `json:"config"`
		Runs    []runResult `json:"runs"`
	}{time.Now().UTC().Format(time.RFC3339), machine(), configJSON(b.c), b.runs}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.c.out, "runs.json"), data, 0o644)
}

func configJSON(c *config) map[string]any {
	return map[string]any{
		"n": c.n, "reps": c.reps, "server_reps": c.serverReps, "duration": c.duration.String(),
		"warmup": c.warmup.String(), "wrk_threads": c.wrkThreads, "wrk_conns": c.wrkConns, "quick": c.quick,
	}
}

func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", runtime.NumCPU(), model, unix.ByteSliceToString(u.Release[:]), runtime.Version())
}
