package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// check is one line of `sfwatch doctor`.
type check struct {
	Name     string `json:"check"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
}

func doctorCommand(args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args); err != nil {
		return usageError("doctor: %v; usage: sfwatch doctor [--json]", err)
	}
	checks := runChecks()
	failed := 0
	for _, c := range checks {
		if c.Required && !c.OK {
			failed++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(checks); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
		for _, c := range checks {
			status := "ok"
			switch {
			case !c.OK && c.Required:
				status = "MISSING"
			case !c.OK:
				status = "note"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, status, c.Detail)
		}
		tw.Flush()
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("doctor: %d required check(s) failed; sfwatch run will not work here", failed)}
	}
	return nil
}

// runChecks tries each thing sfwatch run needs, for real where it can: it
// creates a throw-away group, starts a process in it and loads the programs.
func runChecks() []check {
	var checks []check
	add := func(name string, required bool, err error, okDetail string) {
		c := check{Name: name, OK: err == nil, Required: required, Detail: okDetail}
		if err != nil {
			c.Detail = err.Error()
		}
		checks = append(checks, c)
	}

	who, err := privileges()
	add("privileges", true, err, who)

	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	// What the programs need is probed by name below: distributions
	// backport, so the version only informs.
	add("kernel", true, nil, release+" (tested: docs/kernels.md)")

	_, err = os.Stat("/sys/kernel/btf/vmlinux")
	add("btf", true, err, "/sys/kernel/btf/vmlinux (needed: calls in flight live in task storage)")

	mounted := loader.TracefsMounted()
	err = loader.EnsureTracefs()
	detail := loader.TracefsPath
	if !mounted && err == nil {
		detail += " (was not mounted: mounted it now, as sfwatch run would)"
	}
	add("tracefs", true, err, detail)
	mode := loader.AttachMode()
	add("attach mode", false, nil, mode.Why)
	for _, tp := range loader.Tracepoints() {
		_, err := os.Stat(loader.TracefsPath + "/events/" + tp)
		add("tracepoint "+path.Base(tp), true, err, tp)
	}
	if mode.Kprobes {
		// Not checked by run, which would read all of /proc/kallsyms
		// every time: a missing symbol makes it fail at attach.
		add("kprobe "+loader.KprobeSymbol, true, kallsymsHas(loader.KprobeSymbol), "in /proc/kallsyms (the kprobe pair's function)")
	}

	mount, err := cgroup.Mount()
	add("cgroup2", true, err, mount)

	for _, f := range loader.Features() {
		add(f.Name, true, f.Err, f.Detail)
	}

	group, err := cgroup.New()
	if err != nil {
		add("cgroup group", true, err, "")
		return checks
	}
	defer group.Close()
	add("cgroup group", true, nil, group.Path)
	var noKill error
	if !group.HasCgroupKill() {
		noKill = fmt.Errorf("absent (before 5.14): a run's leftover processes are killed one by one from cgroup.procs")
	}
	add("cgroup.kill", false, noKill, "present")

	err = startSelf(group)
	add("CLONE_INTO_CGROUP", true, err, "started a process directly inside the group")

	tracer, err := loader.Open(loader.Config{CgroupID: group.ID, CgroupLevel: group.Level, RingBufSize: 1 << 16, Follow: true, CgroupPath: group.Rel})
	if err == nil {
		tracer.Close()
	}
	add("BPF programs", true, err, "loaded, attached (as run does), detached")

	// From 7.2 the kernel runs BPF on syscall tracepoints preemptibly and
	// skips a program on a CPU where it is already running (preempted).
	if mode.Kprobes {
		checks = append(checks, check{Name: "program skips", OK: false, Required: false,
			Detail: "the kretprobe holds at most max(10, 2 x CPUs) sendfile calls in flight at once: exits beyond that are missed, and counted as skipped (accounting line, report, sfwatch_programs_skipped_total)"})
	} else if kernelAtLeast(release, 7, 2) == nil {
		checks = append(checks, check{Name: "program skips", OK: false, Required: false,
			Detail: "Linux 7.2+ may skip a program while another thread is preempted inside it: such calls are missing from the totals; sfwatch counts the skips and says so (accounting line, report, sfwatch_programs_skipped_total)"})
	}
	checks = append(checks, check{Name: "32-bit processes", OK: false, Required: false,
		Detail: "compat (32-bit) tasks do not hit these tracepoints on x86-64: their calls are not seen"})
	return checks
}

// kallsymsHas says whether the kernel has the function sym.
func kallsymsHas(sym string) error {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff816d7760 T __x64_sys_sendfile64"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == sym {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%s is not in /proc/kallsyms: sfwatch run cannot attach its kprobe pair", sym)
}

func kernelAtLeast(release string, major, minor int) error {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return fmt.Errorf("kernel %q: cannot parse version", release)
	}
	if ma < major || ma == major && mi < minor {
		return fmt.Errorf("kernel %s is older than %d.%d", release, major, minor)
	}
	return nil
}

// startSelf starts this binary (`sfwatch version`, output discarded) in
// the group: sfwatch itself is there even in an image with nothing else.
func startSelf(group *cgroup.Group) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding sfwatch's own binary: %w", err)
	}
	p, err := child.Start(child.Spec{Cmd: exec.Command(self, "version"), Group: group})
	if err != nil {
		return err
	}
	code, err := p.Wait()
	if err == nil && code != 0 {
		err = fmt.Errorf("%s version exited %d", self, code)
	}
	return err
}
