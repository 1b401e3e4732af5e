// Command daemonbench runs a command next to an sfwatch daemon (the
// internal/daemon observer, totals only unless -events) that watches three
// subtrees, for the benchmark's daemon rows:
//
//	daemonbench -- CMD [ARGS...]          CMD in a group outside every watched subtree
//	daemonbench -watched -- CMD [ARGS...] CMD in a group inside one of them
//	daemonbench -scrape N -call CMD       N groups, CMD run once in each, then the
//	                                      CPU time of a scrape of their metrics
//
// With -events, the daemon reads every watched call's event, as --events
// does, and discards it once validated (the rendering is not measured).
//
// With -progstats, BPF statistics are on while CMD runs, and each of the
// daemon's programs' runs and mean run time are printed after it; with
// -with-run too, run's programs watch CMD's group alongside, measured the
// same way.
//
// The groups are created below a group of its own, removed at the end. It
// exits with the command's status.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/daemon"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/ringreader"
)

func main() {
	watched := flag.Bool("watched", false, "run CMD inside a watched subtree")
	scrape := flag.Int("scrape", 0, "create N groups, run -call in each, and time scrapes")
	call := flag.String("call", "", "with -scrape: the command run once in each group (split on spaces)")
	flag.BoolVar(&progStats, "progstats", false, "print the run time of each program per run (BPF statistics on meanwhile)")
	flag.BoolVar(&withEvents, "events", false, "the daemon reads every watched call's event (--events), rendered nowhere")
	flag.BoolVar(&withRun, "with-run", false, "also load and attach run's programs on CMD's group, their events drained (for -progstats)")
	flag.Parse()
	code, err := run(*watched, *scrape, strings.Fields(*call), flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemonbench:", err)
		os.Exit(125)
	}
	os.Exit(code)
}

var progStats, withRun, withEvents bool

// discard is an EventSink that keeps nothing.
type discard struct{}

func (discard) Event(string, *events.Event, events.Verdict) {}
func (discard) Idle()                                       {}

// printStats prints each program's runs and mean run time.
func printStats(what string, read func() (map[string]*ebpf.ProgramStats, error)) {
	stats, err := read()
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemonbench:", err)
		return
	}
	for _, name := range slices.Sorted(maps.Keys(stats)) {
		if s := stats[name]; s.RunCount > 0 {
			fmt.Fprintf(os.Stderr, "daemonbench: %s %s: %d runs, %.0f ns per run\n", what, name, s.RunCount, float64(s.Runtime.Nanoseconds())/float64(s.RunCount))
		}
	}
}

func run(watched bool, scrape int, call, args []string) (int, error) {
	if (scrape > 0) == (len(args) > 0) || scrape > 0 && len(call) == 0 {
		return 0, fmt.Errorf("want -- CMD, or -scrape N -call CMD")
	}
	mount, err := cgroup.Mount()
	if err != nil {
		return 0, err
	}
	top, err := cgroup.New()
	if err != nil {
		return 0, err
	}
	defer top.Close()
	// Three watched subtrees at one level, as /system.slice,
	// /kubepods.slice and /user.slice are, and a group outside them.
	for _, dir := range []string{"w1/app", "w2", "w3", "out"} {
		if err := os.MkdirAll(filepath.Join(top.Path, dir), 0o755); err != nil {
			return 0, err
		}
	}
	watch := []string{top.Rel + "/w1", top.Rel + "/w2", top.Rel + "/w3"}
	cfg := daemon.Config{Watch: watch, MaxGroups: max(1024, scrape+1)}
	if withEvents {
		cfg.Events = discard{}
	}
	d, err := daemon.Start(mount, cfg)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	if scrape > 0 {
		return 0, scrapes(d, top, scrape, call)
	}
	where := filepath.Join(top.Path, "out")
	if watched {
		where = filepath.Join(top.Path, "w1/app")
	}
	var tr *loader.Tracer
	if withRun {
		// run's programs on the same group, side by side with the
		// daemon's, their events drained as run --quiet drains them.
		g, err := cgroup.Open(where)
		if err != nil {
			return 0, err
		}
		defer g.Close()
		if tr, err = loader.Open(loader.Config{CgroupID: g.ID, CgroupLevel: g.Level}); err != nil {
			return 0, err
		}
		defer tr.Close()
		events, err := ringreader.New(tr.Maps().Events)
		if err != nil {
			return 0, err
		}
		defer events.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				events.SetDeadline(time.Now().Add(100 * time.Millisecond))
				events.Wait()
				events.Drain(func([]byte) error { return nil })
			}
		}()
	}
	if progStats {
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			return 0, fmt.Errorf("enabling BPF statistics: %w", err)
		}
		defer stats.Close()
	}
	code, err := runIn(where, args, true)
	if err != nil {
		return 0, err
	}
	if progStats {
		printStats("daemon", d.RunStats)
		if tr != nil {
			printStats("run", tr.RunStats)
		}
	}
	totals, err := d.Snapshot()
	if err != nil {
		return 0, err
	}
	var calls uint64
	for _, t := range totals {
		calls += t.Calls()
	}
	fmt.Fprintf(os.Stderr, "daemonbench: %d calls counted in the kernel\n", calls)
	if withEvents {
		if err := d.Detach(); err != nil {
			return 0, err
		}
		lost, err := d.EventsLost()
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(os.Stderr, "daemonbench: %d events delivered, %d lost\n", d.Delivered(), lost)
	}
	return code, nil
}

// runIn runs argv in the group at path and returns its exit code.
func runIn(path string, argv []string, output bool) (int, error) {
	dir, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	if output {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// scrapes creates n groups in a watched subtree, runs call once in each,
// then scrapes (gathers and encodes) 20 times and prints the CPU time and
// wall time per scrape (served through the daemon's /metrics handler).
func scrapes(d *daemon.Daemon, top *cgroup.Group, n int, call []string) error {
	for i := range n {
		path := filepath.Join(top.Path, "w2", fmt.Sprintf("g%d", i))
		if err := os.Mkdir(path, 0o755); err != nil {
			return err
		}
		if code, err := runIn(path, call, false); err != nil || code != 0 {
			return fmt.Errorf("running %q in %s: exit %d, %v", call, path, code, err)
		}
	}
	h := daemon.Handler(d, daemon.NewRegistry(d, "bench"), 1, time.Minute)
	if prof := os.Getenv("DAEMONBENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	const rounds = 20
	var rec *httptest.ResponseRecorder
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	for range rounds {
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			return fmt.Errorf("scrape: %d %s", rec.Code, rec.Body)
		}
	}
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / rounds
	fmt.Printf("scrape of %d groups: %.1f ms CPU, %.1f ms wall, %d lines, %d bytes (mean of %d)\n",
		d.Groups(), float64(cpu)/1e6, float64(wall/rounds)/1e6, bytes.Count(rec.Body.Bytes(), []byte("\n")), rec.Body.Len(), rounds)
	return nil
}
