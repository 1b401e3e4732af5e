package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The machine is shared: other people's tests come and go. Every run waits
// for the machine to be quiet first, and measures the CPU that processes
// other than its own used while it ran ("foreign" CPU); a run disturbed
// past a limit is done again, up to maxAttempts times, and flagged in the
// results if it never ran undisturbed.

const (
	quietLimit  = 0.15 // CPUs busy, at most, before a run starts
	quietWindow = 300 * time.Millisecond
	quietMax    = 90 * time.Second // then go on anyway, and say so
	maxAttempts = 3
)

// busyNs is the CPU time all CPUs spent in user and system mode (not in
// interrupts: loopback traffic is processed there on the workload's behalf).
func busyNs() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, s := range f[1:4] { // user nice system
		v, _ := strconv.ParseInt(s, 10, 64)
		ticks += v
	}
	return ticks * clockTick
}

// ourNs is the CPU time of this process and of every child it reaped.
func ourNs() int64 {
	var self, children unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &self)
	unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	return unix.TimevalToNsec(self.Utime) + unix.TimevalToNsec(self.Stime) +
		unix.TimevalToNsec(children.Utime) + unix.TimevalToNsec(children.Stime)
}

// reapStrays waits for children that are not ours to wait for: we are a
// subreaper, so a workload its tracer left behind (perf trace does not reap
// its child) comes to us, and its CPU time is then counted as ours.
func reapStrays() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// waitQuiet waits until the machine is quiet, at most quietMax. It reports
// whether it was.
func waitQuiet() bool {
	start := time.Now()
	for time.Since(start) < quietMax {
		b0 := busyNs()
		time.Sleep(quietWindow)
		if float64(busyNs()-b0)/float64(quietWindow) < quietLimit {
			return true
		}
	}
	fmt.Fprintf(os.Stderr, "sfbench: machine still busy after %v, running anyway\n", quietMax)
	return false
}

// measured runs f on a quiet machine and returns its result with the
// foreign CPU it saw (in CPUs), repeating a disturbed run.
func (b *bench) measured(limit float64, f func() runResult) runResult {
	var r runResult
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		waitQuiet()
		b0, o0, t0 := busyNs(), ourNs(), time.Now()
		r = f()
		reapStrays()
		wall := time.Since(t0)
		foreign := float64((busyNs()-b0)-(ourNs()-o0)) / float64(wall)
		r.Foreign = max(foreign, 0)
		r.Attempts = attempt
		if r.Foreign <= limit || r.Err != "" {
			return r
		}
		fmt.Fprintf(os.Stderr, "sfbench: %s/%s disturbed (%.2f CPUs used by others), again\n", r.Workload, r.Observer, r.Foreign)
		b.disturbed++
	}
	r.Disturbed = true
	return r
}

// sfwatchStartup is sfwatch's own CPU time for a run of a command that
// makes no call (start-up, attach, detach, exit): the fixed part of its
// CPU per event. Median of 5.
func (b *bench) sfwatchStartup() float64 {
	var xs []float64
	for range 5 {
		waitQuiet()
		p, err := spawn([]string{b.path("sfwatch"), "run", "--quiet", "--", "/bin/true"}, time.Minute, nil)
		if err != nil {
			continue
		}
		// /bin/true's own CPU is in the rusage too; it is tens of µs.
		xs = append(xs, float64(p.rusageNs))
	}
	if len(xs) == 0 {
		return 0
	}
	return median(xs)
}
