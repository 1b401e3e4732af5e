// Package loader loads sfwatch's BPF programs, points their cgroup filter at
// one group, attaches them to the sendfile64 syscall tracepoints (and to
// signal_deliver, which settles calls a signal interrupts), and reads
// what only it holds: the programs' skips and the run's followed tasks.
// Its maps it hands over: the events to internal/ringreader, the counters
// to internal/counters.
package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultRingBufSize holds about 80,000 events: a full second of a tight
// sendfile loop on this class of machine, so the consumer can fall far behind
// before anything is lost.
const DefaultRingBufSize = 8 << 20

// Config is every knob of the kernel side, set before load.
type Config struct {
	CgroupID    uint64 // the watched cgroup v2 group (its inode number)
	CgroupLevel uint32 // its depth below the cgroup2 root
	RingBufSize int    // bytes; a power of two and a multiple of the page size; 0 = DefaultRingBufSize
	SampleEvery uint32 // emit one event per N calls; 0 or 1 = every call
	// Follow keeps watching the tasks that leave the group (run: the
	// command and its descendants, wherever they go) and counts them as
	// escaped. CgroupPath is then the group's path below the cgroup2
	// mount, "/sfwatch-1-1".
	Follow     bool
	CgroupPath string
}

// Tracer is the loaded and attached BPF side. Close detaches everything;
// nothing is pinned, so a crash leaves nothing behind either.
type Tracer struct {
	objs  SfwatchMaps
	coll  *ebpf.Collection // the programs of programs(), and the data maps
	links []link.Link
	// kretprobe is the kretprobe's link in kprobe mode: its missed count
	// (exits beyond maxactive) is added to the program's skips.
	kretprobe  link.Link
	lastMissed uint64 // its missed count, read as it was detached
}

type attachKind int

const (
	rawTracepoint attachKind = iota // the kernel's own arguments; closes without perf's grace periods
	tracepoint                      // a perf tracepoint event
	kprobe
	kretprobe
)

// program is one BPF program and where it is attached.
type program struct {
	name string // the BPF program's name, and its key in Skips
	kind attachKind
	// group and target: the tracepoint (group/target), or, for a kprobe,
	// the kernel function (target).
	group, target string
	// follow programs are attached only with Config.Follow.
	follow bool
}

// ExitProgram is the one program whose skips cost no call: it forgets an
// exited thread, and the entry a skip leaves behind is recognised as stale
// (struct member in bpf/sfwatch.c). Its skips are Skips' missedExits.
const ExitProgram = "sched_process_exit"

// The programs are attached in this order: what settles a call before what
// starts one, so that no call is ever entered without its exit (and, when a
// signal interrupts it, its settling) being watched.
//
// The follow programs come first: the command's exec, and every fork and
// move of its tasks, are seen before its first sendfile can be.
var commonPrograms = []program{
	{ExitProgram, rawTracepoint, "sched", "sched_process_exit", true},
	{"cgroup_attach_task", rawTracepoint, "cgroup", "cgroup_attach_task", true},
	{"sched_process_fork", rawTracepoint, "sched", "sched_process_fork", true},
	{"sched_process_exec", rawTracepoint, "sched", "sched_process_exec", true},
	// signal_deliver is a raw tracepoint: its link then closes without
	// the grace periods a perf tracepoint event waits for.
	{"signal_deliver", rawTracepoint, "signal", "signal_deliver", false},
}

// The sendfile entry and exit, exit first: the syscall tracepoints, or
// (kprobe mode, see attachMode) a kprobe pair on the syscall's x86-64 entry
// point.
var (
	tracepointPrograms = []program{
		{"sys_exit_sendfile64", tracepoint, "syscalls", "sys_exit_sendfile64", false},
		{"sys_enter_sendfile64", tracepoint, "syscalls", "sys_enter_sendfile64", false},
	}
	kprobePrograms = []program{
		{"sys_exit_sendfile64_kretprobe", kretprobe, "", KprobeSymbol, false},
		{"sys_enter_sendfile64_kprobe", kprobe, "", KprobeSymbol, false},
	}
)

// KprobeSymbol is the kernel function the kprobe pair is attached to.
const KprobeSymbol = "__x64_sys_sendfile64"

// programs lists what this kernel gets, in attach order.
func programs() []program {
	if AttachMode().Kprobes {
		return append(slices.Clip(commonPrograms), kprobePrograms...)
	}
	return append(slices.Clip(commonPrograms), tracepointPrograms...)
}

// Mode is how the sendfile entry and exit are attached on this kernel.
type Mode struct {
	Kprobes bool   // a kprobe pair on KprobeSymbol, not the syscall tracepoints
	Why     string // one line
}

// AttachMode decides, once, how to attach the sendfile entry and exit.
//
// From Linux 7.2 syscall tracepoints are faultable, and run BPF
// preemptibly: a thread preempted inside a program makes the kernel skip
// the program for every other thread on that CPU (docs/kernels.md has the
// measurements). A kprobe pair runs with preemption disabled and was never
// skipped there, so it is used where the kernel has kprobes; everywhere
// else the tracepoints, which have no maxactive bound. The version
// decides: the kernel symbol that would tell is found only by reading all
// of /proc/kallsyms, too slow for every run.
var AttachMode = sync.OnceValue(func() Mode {
	return attachMode(runtime.GOARCH, kernelRelease(), statOK(kprobePMU))
})

// kprobePMU is there when the kernel can create kprobes as perf events,
// which is how cilium/ebpf attaches them (kprobe_events in tracefs is its
// fallback).
const kprobePMU = "/sys/bus/event_source/devices/kprobe"

func statOK(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func attachMode(arch, release string, havePMU bool) Mode {
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return Mode{false, fmt.Sprintf("syscall tracepoints (kernel version %q not understood)", release)}
	}
	if major < 7 || major == 7 && minor < 2 {
		return Mode{false, fmt.Sprintf("syscall tracepoints: Linux %d.%d runs their BPF with preemption disabled (the kprobe pair is for 7.2+)", major, minor)}
	}
	if arch != "amd64" {
		return Mode{false, fmt.Sprintf("syscall tracepoints, which Linux 7.2+ may skip (the kprobe pair reads x86-64 registers; this is %s)", arch)}
	}
	if !havePMU {
		return Mode{false, "syscall tracepoints, which Linux 7.2+ may skip (no kprobes: " + kprobePMU + " is absent)"}
	}
	return Mode{true, fmt.Sprintf("kprobe and kretprobe on %s: Linux %d.%d runs syscall tracepoint programs preemptibly and may skip them; kprobes run non-preemptibly", KprobeSymbol, major, minor)}
}

// Tracepoints names, as "group/name", the tracepoints Open attaches to on
// this kernel, in the order it attaches them (with Config.Follow).
func Tracepoints() []string {
	var names []string
	for _, p := range programs() {
		if p.kind == rawTracepoint || p.kind == tracepoint {
			names = append(names, p.group+"/"+p.target)
		}
	}
	return names
}

// Programs names every program Open loads on this kernel: the keys of
// Skips' skipped, and ExitProgram's for its missedExits.
func Programs() []string {
	var names []string
	for _, p := range programs() {
		names = append(names, p.name)
	}
	return names
}

// MaxRingBufSize is the largest ring buffer sfwatch asks for: its pages
// are the kernel's memory, unswappable, a gigabyte at this size; 128
// times the default, it holds minutes of a tight loop. Sizes from 4 GiB
// on do not fit the map's 32-bit size at all.
const MaxRingBufSize = 1 << 30

// ValidateRingBufSize says why size cannot be a ring buffer size, or nil.
func ValidateRingBufSize(size int) error {
	page := os.Getpagesize()
	if size < page || size > MaxRingBufSize || size&(size-1) != 0 {
		return fmt.Errorf("ring buffer size %d: want a power of two from %d to %d bytes (1 GiB: its pages are unswappable kernel memory), e.g. %d", size, page, MaxRingBufSize, DefaultRingBufSize)
	}
	return nil
}

// Open loads the programs for cfg and attaches them. tracefs is mounted at
// /sys/kernel/tracing first when it is not mounted yet.
func Open(cfg Config) (*Tracer, error) {
	if cfg.RingBufSize == 0 {
		cfg.RingBufSize = DefaultRingBufSize
	}
	if err := ValidateRingBufSize(cfg.RingBufSize); err != nil {
		return nil, err
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = 1
	}
	if err := prepareKernel(); err != nil {
		return nil, err
	}

	spec, err := LoadSfwatch()
	if err != nil {
		return nil, fmt.Errorf("loading BPF spec: %w", err)
	}
	spec.Maps[SfwatchMapEvents].MaxEntries = uint32(cfg.RingBufSize)
	for _, name := range []string{SfwatchMapCounters, SfwatchMapLatencyLog2} {
		if err := perCPU(spec.Maps[name]); err != nil {
			return nil, err
		}
	}
	// Through bpf2go's typed specs: a misspelt name does not compile.
	var vars SfwatchVariableSpecs
	if err := spec.Assign(&vars); err != nil {
		return nil, fmt.Errorf("loading BPF variables: %w", err)
	}
	consts := []constant{
		{vars.TargetCgroupId, cfg.CgroupID},
		{vars.TargetLevel, cfg.CgroupLevel},
		{vars.SampleEvery, cfg.SampleEvery},
		// Wake the reader once an eighth of the buffer is unread; below
		// that it drains on its own timer (internal/session).
		{vars.WakeupBytes, uint64(cfg.RingBufSize / 8)},
	}
	if cfg.Follow {
		follow, err := followConsts(&vars, cfg.CgroupPath)
		if err != nil {
			return nil, err
		}
		consts = append(consts, follow...)
	}
	for _, c := range consts {
		if err := c.spec.Set(c.value); err != nil {
			return nil, fmt.Errorf("setting %s: %w", c.spec.Name, err)
		}
	}

	// Only this kernel's programs are loaded (and verified): the others
	// are dropped from the spec.
	progs := programs()
	for name := range spec.Programs {
		if !slices.ContainsFunc(progs, func(p program) bool { return p.name == name }) {
			delete(spec.Programs, name)
		}
	}
	t := &Tracer{}
	if t.coll, err = newCollection(spec); err != nil {
		return nil, err
	}
	if err := t.coll.Assign(&t.objs); err != nil {
		t.Close()
		return nil, fmt.Errorf("loading BPF maps: %w", err)
	}
	// What is left are the data sections (.bss, .rodata): the programs
	// hold them, Go never reads them, so their descriptors go.
	for name, m := range t.coll.Maps {
		m.Close()
		delete(t.coll.Maps, name)
	}
	if !cfg.Follow {
		progs = slices.DeleteFunc(slices.Clone(progs), func(p program) bool { return p.follow })
	}
	if t.links, t.kretprobe, err = attachAll(t.coll, progs); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// attachAll attaches progs of coll in order, and returns their links and
// the kretprobe's among them; on an error, what it attached is detached.
func attachAll(coll *ebpf.Collection, progs []program) (links []link.Link, kret link.Link, err error) {
	for _, p := range progs {
		l, err := p.attach(coll.Programs[p.name])
		if err != nil {
			closeLinks(links)
			return nil, nil, err
		}
		if p.kind == kretprobe {
			kret = l
		}
		links = append(links, l)
	}
	return links, kret, nil
}

// prepareKernel mounts tracefs when it is missing, and lifts the memlock
// limit that kernels before 5.11 charge BPF memory to (a no-op after).
func prepareKernel() error {
	if err := EnsureTracefs(); err != nil {
		return err
	}
	// Set here rather than with cilium/ebpf's rlimit package, whose init
	// probes the kernel with a map in every process that links it: every
	// client of the daemon, which never loads a program. Best effort: from
	// 5.11 the limit is not used, and a container may not raise it.
	inf := &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	unix.Setrlimit(unix.RLIMIT_MEMLOCK, inf)
	return nil
}

// newCollection loads spec's maps and programs, and says why it could not.
func newCollection(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		// A missing feature says more than "map create: invalid argument".
		if ferr := checkFeatures(Features()); ferr != nil {
			return nil, ferr
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading BPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	return coll, nil
}

// attach attaches prog where p says.
func (p program) attach(prog *ebpf.Program) (l link.Link, err error) {
	switch p.kind {
	case rawTracepoint:
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.target, Program: prog})
	case tracepoint:
		l, err = link.Tracepoint(p.group, p.target, prog, nil)
	case kprobe:
		l, err = link.Kprobe(p.target, prog, nil)
	case kretprobe:
		// The default maxactive (max(10, 2 x CPUs) calls in
		// flight): exits beyond it are counted, see Skips.
		l, err = link.Kretprobe(p.target, prog, nil)
	}
	if err != nil {
		if p.kind == kprobe || p.kind == kretprobe {
			return nil, fmt.Errorf("attaching %s to %s (%s): %w", p.name, p.target, AttachMode().Why, err)
		}
		return nil, fmt.Errorf("attaching tracepoint %s/%s: %w", p.group, p.target, err)
	}
	return l, nil
}

// perCPU gives spec one row of its max_entries slots for every possible
// CPU: counters and latency_log2 are arrays read through memory (see
// internal/counters), which per-CPU maps cannot be.
func perCPU(spec *ebpf.MapSpec) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting possible CPUs: %w", err)
	}
	spec.MaxEntries *= uint32(cpus)
	return nil
}

// constant is a value for one of the programs' constants, set before load.
type constant struct {
	spec  *ebpf.VariableSpec
	value any
}

// followConsts are the constants of the follow programs: the group's path
// as the kernel prints it, and where task_struct keeps what they read.
func followConsts(vars *SfwatchVariableSpecs, cgroupPath string) ([]constant, error) {
	path := strings.TrimSuffix(cgroupPath, "/")
	var buf [256]byte // TARGET_PATH_MAX in bpf/sfwatch.c
	if len(path) > len(buf) {
		return nil, fmt.Errorf("following tasks of group %s: its path is longer than %d bytes", cgroupPath, len(buf))
	}
	copy(buf[:], path)
	offs, err := readTaskOffsets()
	if err != nil {
		return nil, fmt.Errorf("finding pid, tgid, group_leader and start_boottime in struct task_struct: %w", err)
	}
	return []constant{
		{vars.TargetPath, buf},
		{vars.TargetPathLen, uint32(len(path))},
		{vars.TaskPidOff, offs.pid},
		{vars.TaskTgidOff, offs.tgid},
		{vars.TaskGroupLeaderOff, offs.groupLeader},
		{vars.TaskStartOff, offs.startBoottime},
	}, nil
}

// Task is one task of the run: its thread id (a process's is its pid), and
// its start time, which tells it from a later task given the same id.
type Task struct {
	TID int
	// StartBoottime is the task's start, in ns since boot: /proc/TID/stat's
	// starttime field in ns rather than clock ticks.
	StartBoottime uint64
}

// Alive tells whether task.TID still names this task (running, or a
// zombie not yet reaped): its start time in /proc/TID/stat is the one the
// BPF side recorded. The id of an exited task may be another's by now,
// which must not be killed. Between this check and a kill, the id would
// have to be freed and handed out again: a wrap of the pid space.
func (task Task) Alive() bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(task.TID) + "/stat")
	if err != nil {
		return false
	}
	// After the command name, in parentheses and possibly holding spaces
	// and parentheses itself: state is field 3, starttime field 22.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 {
		return false
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	// In clock ticks of USER_HZ, which Linux fixes at 100 on x86 and
	// arm64: the kernel's nsec_to_clock_t truncates, and so does this.
	return err == nil && ticks == task.StartBoottime/(1e9/userHZ)
}

// userHZ is the unit of /proc/PID/stat's times (sysconf(_SC_CLK_TCK)).
const userHZ = 100

// Followed lists the tasks of the run that left its group and are
// followed since: what a cleanup must kill besides the group. It may list
// a task that has exited (the kernel can skip the program that forgets
// it): ask Alive before acting on the id.
func (t *Tracer) Followed() ([]Task, error) {
	var (
		tid   uint32
		m     SfwatchMember
		tasks []Task
	)
	it := t.objs.Members.Iterate()
	for it.Next(&tid, &m) {
		if m.Flags&uint32(SfwatchMemberFlagMEMBER_FOLLOWED) != 0 {
			tasks = append(tasks, Task{int(tid), m.StartBoottime})
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading followed tasks: %w", err)
	}
	return tasks, nil
}

// Close detaches the programs and frees every map. Idempotent.
func (t *Tracer) Close() error {
	errs := []error{t.Detach(), t.objs.Close()}
	if t.coll != nil {
		t.coll.Close()
	}
	return errors.Join(errs...)
}

// Detach stops new calls from being traced while keeping the maps and the
// ring buffer readable, so the caller can drain and read final totals.
//
// The links are closed in parallel: each close waits for an RCU grace
// period in the kernel, and concurrent closes share it.
func (t *Tracer) Detach() error {
	var missedErr error
	if t.kretprobe != nil {
		// The link's count is gone with it: read just before it closes.
		_, missedErr = t.kretprobeMissed()
		t.kretprobe = nil
	}
	err := closeLinks(t.links)
	t.links = nil
	return errors.Join(err, missedErr)
}

// closeLinks closes links in parallel: each close waits for an RCU grace
// period in the kernel, and concurrent closes share it.
func closeLinks(links []link.Link) error {
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Maps are the programs' maps, for the packages that read them: Events
// for a ringreader.Reader, the counter maps for a counters.Reader. They
// stay readable after Detach, until Close.
func (t *Tracer) Maps() *SfwatchMaps { return &t.objs }

// Skips reads, by program (every one of Programs but ExitProgram), the
// times the kernel did not run it (counters.Snapshot.Skipped says what
// that costs), and ExitProgram's apart: missedExits. They are read from
// the programs and the kretprobe's link, which only the loader holds, and
// stay readable after Detach.
func (t *Tracer) Skips() (skipped map[string]uint64, missedExits uint64, err error) {
	return programSkips(t.coll, programs(), t.kretprobeMissed)
}

// programSkips reads the skips of progs, and ExitProgram's apart; missed
// gives the kretprobe's missed exits.
func programSkips(coll *ebpf.Collection, progs []program, missed func() (uint64, error)) (map[string]uint64, uint64, error) {
	skipped := make(map[string]uint64, len(progs))
	var missedExits uint64
	for _, p := range progs {
		// Program info carries recursion misses since Linux 5.12 (zero
		// before), whether or not BPF statistics are enabled.
		stats, err := coll.Programs[p.name].Stats()
		if err != nil {
			return nil, 0, fmt.Errorf("reading skips of %s: %w", p.name, err)
		}
		if p.name == ExitProgram {
			missedExits = stats.RecursionMisses
			continue
		}
		skipped[p.name] = stats.RecursionMisses
		if p.kind == kretprobe {
			n, err := missed()
			if err != nil {
				return nil, 0, fmt.Errorf("reading missed exits of %s: %w", p.name, err)
			}
			skipped[p.name] += n
		}
	}
	return skipped, missedExits, nil
}

// kretprobeMissed is what the kretprobe's link missed: exits beyond
// maxactive calls in flight, and kprobe reentries. Kept after Detach: the
// last value read while attached.
func (t *Tracer) kretprobeMissed() (uint64, error) {
	if t.kretprobe == nil {
		return t.lastMissed, nil
	}
	n, err := linkMissed(t.kretprobe)
	if err != nil {
		return 0, err
	}
	t.lastMissed = n
	return n, nil
}

// linkMissed is what a kprobe link missed.
func linkMissed(l link.Link) (uint64, error) {
	info, err := l.Info()
	if err != nil {
		return 0, err
	}
	pe := info.PerfEvent()
	if pe == nil || pe.Kprobe() == nil {
		return 0, fmt.Errorf("link info of type %v has no kprobe info", info.Type)
	}
	return pe.Kprobe().Missed, nil
}
