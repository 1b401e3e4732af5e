// Package loader loads sfwatch's BPF programs, points their cgroup filter at
// one group, attaches them to the sendfile64 syscall tracepoints (and to
// signal_deliver, which settles calls a signal interrupts), and owns
// the ring-buffer reader and the kernel-side counters.
package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
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
	objs   SfwatchMaps
	coll   *ebpf.Collection // the programs of programs(), and the data maps
	links  []link.Link
	reader *ring
	// kretprobe is the kretprobe's link in kprobe mode: its missed count
	// (exits beyond maxactive) is added to the program's skips.
	kretprobe  link.Link
	lastMissed uint64 // its missed count, read as it was detached
	// counters and latency, read through memory (cpuRows).
	counters, latency *cpuRows
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
	name string // the BPF program's name, and its key in Snapshot.Skipped
	kind attachKind
	// group and target: the tracepoint (group/target), or, for a kprobe,
	// the kernel function (target).
	group, target string
	// follow programs are attached only with Config.Follow.
	follow bool
}

// ExitProgram is the one program whose skips cost no call: it forgets an
// exited thread, and the entry a skip leaves behind is recognised as stale
// (struct member in bpf/sfwatch.c). Its skips are Snapshot.MissedExits.
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
// the program for every other thread on that CPU (1-20% of the calls of a
// busy server, docs/kernels.md). A kprobe pair runs with preemption
// disabled and was never skipped there, so it is used where the kernel
// has kprobes; everywhere else the tracepoints, which have no maxactive
// bound. The version decides: the kernel symbol that would tell
// (/proc/kallsyms) costs 25-75 ms to find, every run.
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
// Snapshot.Skipped, and ExitProgram's for Snapshot.MissedExits.
func Programs() []string {
	var names []string
	for _, p := range programs() {
		names = append(names, p.name)
	}
	return names
}

// MaxRingBufSize is the largest ring buffer sfwatch asks for. The kernel
// maps the data pages twice, so the buffer costs twice its size in memory
// (2 GiB here); 128 times the default, it holds minutes of a tight loop.
// Sizes from 4 GiB on do not fit the map's 32-bit size at all.
const MaxRingBufSize = 1 << 30

// ValidateRingBufSize says why size cannot be a ring buffer size, or nil.
func ValidateRingBufSize(size int) error {
	page := os.Getpagesize()
	if size < page || size > MaxRingBufSize || size&(size-1) != 0 {
		return fmt.Errorf("ring buffer size %d: want a power of two from %d to %d bytes (1 GiB: it costs twice its size in memory), e.g. %d", size, page, MaxRingBufSize, DefaultRingBufSize)
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
	counterRow, err := perCPU(spec.Maps[SfwatchMapCounters])
	if err != nil {
		return nil, err
	}
	latencyRow, err := perCPU(spec.Maps[SfwatchMapLatencyLog2])
	if err != nil {
		return nil, err
	}
	consts := map[string]any{
		"target_cgroup_id": cfg.CgroupID,
		"target_level":     cfg.CgroupLevel,
		"sample_every":     cfg.SampleEvery,
		// Wake the reader once an eighth of the buffer is unread; below
		// that it drains on its own timer (see Reader).
		"wakeup_bytes": uint64(cfg.RingBufSize / 8),
	}
	if cfg.Follow {
		follow, err := followConsts(cfg.CgroupPath)
		if err != nil {
			return nil, err
		}
		maps.Copy(consts, follow)
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
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
	if t.counters, err = newCPURows(t.objs.Counters, counterRow); err == nil {
		t.latency, err = newCPURows(t.objs.LatencyLog2, latencyRow)
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	// What is left are the data sections (.bss, .rodata): the programs
	// hold them, Go never reads them, so their descriptors go.
	for name, m := range t.coll.Maps {
		m.Close()
		delete(t.coll.Maps, name)
	}
	for _, p := range progs {
		if p.follow && !cfg.Follow {
			continue
		}
		l, err := p.attach(t.coll.Programs[p.name])
		if err != nil {
			t.Close()
			return nil, err
		}
		if p.kind == kretprobe {
			t.kretprobe = l
		}
		t.links = append(t.links, l)
	}
	t.reader, err = newRing(t.objs.Events.FD(), int(t.objs.Events.MaxEntries()))
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening ring buffer reader: %w", err)
	}
	return t, nil
}

// prepareKernel mounts tracefs when it is missing, and lifts the memlock
// limit that kernels before 5.11 charge BPF memory to (a no-op after).
func prepareKernel() error {
	if err := EnsureTracefs(); err != nil {
		return err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("removing memlock limit: %w", err)
	}
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
		// flight): exits beyond it are counted, see Snapshot.
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

// followConsts are the constants of the follow programs: the group's path
// as the kernel prints it, and where task_struct keeps what they read.
func followConsts(cgroupPath string) (map[string]any, error) {
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
	return map[string]any{
		"target_path":           buf,
		"target_path_len":       uint32(len(path)),
		"task_pid_off":          offs.pid,
		"task_tgid_off":         offs.tgid,
		"task_group_leader_off": offs.groupLeader,
		"task_start_off":        offs.startBoottime,
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
	errs := []error{t.Detach()}
	if t.reader != nil {
		// Kept, closed: a consumer still running gets os.ErrClosed.
		errs = append(errs, t.reader.close())
	}
	errs = append(errs, t.objs.Close())
	if t.coll != nil {
		t.coll.Close()
	}
	return errors.Join(errs...)
}

// Detach stops new calls from being traced while keeping the maps and the
// ring buffer readable, so the caller can drain and read final totals.
//
// The links are closed in parallel: each close waits for an RCU grace
// period in the kernel (about 27 ms here), and concurrent closes share it.
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
// period in the kernel (about 27 ms here), and concurrent closes share it.
func closeLinks(links []link.Link) error {
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ReadInto waits for the next record, or until the deadline set with
// SetDeadline passes (os.ErrDeadlineExceeded, after the records present at
// that time have been returned), or until Flush (ringbuf.ErrFlushed).
// Below the wakeup threshold the kernel does not wake us, so the caller
// keeps a short deadline to pick up a trickle of events promptly. One
// record at a time, copied: Drain is the fast path.
func (t *Tracer) ReadInto(rec *ringbuf.Record) error { return t.reader.readInto(rec) }

// Drain hands every record committed so far to fn, in order and in place:
// raw is only valid during the call, and fn must not keep it. It returns
// how many records it handed over, and fn's first error.
func (t *Tracer) Drain(fn func(raw []byte) error) (int, error) { return t.reader.drainAll(fn) }

// Wait blocks until the BPF side wakes the reader (once the unread data
// passes the wakeup threshold), the deadline set with SetDeadline passes
// (os.ErrDeadlineExceeded), or Flush is called (ringbuf.ErrFlushed). It
// returns nil on a wakeup; records below the threshold are only picked up
// by the next Drain.
func (t *Tracer) Wait() error { return t.reader.wait() }

// SetDeadline bounds the next ReadInto and Wait calls.
func (t *Tracer) SetDeadline(d time.Time) { t.reader.deadline = d }

// Flush makes a blocked ReadInto or Wait return ringbuf.ErrFlushed (ReadInto
// after what is in the buffer): the final drain.
func (t *Tracer) Flush() error { return t.reader.flush() }

// RingBufSize is the size of the ring buffer in bytes.
func (t *Tracer) RingBufSize() int { return t.reader.size }

// Counters holds the summed per-CPU totals, indexed by SfwatchCounter.
type Counters [SfwatchCounterCOUNTER_MAX]uint64

// Get returns one total.
func (c *Counters) Get(i SfwatchCounter) uint64 { return c[i] }

// Snapshot is every kernel-side total at one moment.
type Snapshot struct {
	Counters    Counters
	ErrnoCounts map[syscall.Errno]uint64 // failed calls by errno; only non-zero entries
	LatencyLog2 [64]uint64               // bucket i: durations in [2^(i-1), 2^i) ns
	// Skipped counts, by program (every one of Programs but
	// sched_process_exit, see MissedExits), the times the kernel did not
	// run it: its recursion misses. The kernel runs one
	// tracing program at a time per CPU, and from Linux 7.2 syscall
	// tracepoints run BPF preemptibly, so a thread preempted inside a
	// program makes the same program skip for every other thread on that
	// CPU (hence the kprobe mode, see AttachMode). In kprobe mode the
	// kretprobe's count adds the exits its link missed: calls beyond
	// maxactive in flight at once. A skipped entry or exit is a call
	// missing from every total, and a skip cannot be tied to a process:
	// any thread on the machine that hit the program may have been
	// skipped. In kprobe mode a map read or write through the bpf syscall
	// (by any process) holds the CPU's BPF-active flag, which kprobes
	// share, and a thread preempted inside one makes the kprobes on that
	// CPU skip; sfwatch reads its totals through memory for that reason.
	Skipped map[string]uint64
	// MissedExits counts the thread exits the kernel skipped telling the
	// BPF side (sched_process_exit's skips, for any thread on the
	// machine). A skip costs no call: it leaves a stale entry among the
	// run's tasks, which the task's start time shows up for what it is.
	MissedExits uint64
}

// Snapshot reads and sums the CPUs' counts. The counts are exact whatever
// happened to the event stream.
func (t *Tracer) Snapshot() (Snapshot, error) {
	var s Snapshot
	// Through memory, no syscall: see counters in bpf/sfwatch.c.
	if err := t.counters.sum(s.Counters[:]); err != nil {
		return s, fmt.Errorf("reading counters: %w", err)
	}
	if err := t.latency.sum(s.LatencyLog2[:]); err != nil {
		return s, fmt.Errorf("reading latency histogram: %w", err)
	}
	mem, err := t.objs.ErrnoCounts.Memory()
	if err != nil {
		return s, fmt.Errorf("reading errno counts: %w", err)
	}
	errnos := make([]byte, 8*t.objs.ErrnoCounts.MaxEntries())
	if _, err := mem.ReadAt(errnos, 0); err != nil {
		return s, fmt.Errorf("reading errno counts: %w", err)
	}
	s.ErrnoCounts = make(map[syscall.Errno]uint64)
	for errno := range len(errnos) / 8 {
		if n := binary.NativeEndian.Uint64(errnos[errno*8:]); n != 0 {
			s.ErrnoCounts[syscall.Errno(errno)] = n
		}
	}
	s.Skipped, s.MissedExits, err = programSkips(t.coll, programs(), t.kretprobeMissed)
	return s, err
}

// programSkips reads the skips of progs (see Snapshot.Skipped), and
// ExitProgram's apart; missed gives the kretprobe's missed exits.
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

// Lost is the events lost so far (COUNTER_LOST), for a notice while the
// programs run: one slot per CPU, read through memory.
func (t *Tracer) Lost() (uint64, error) {
	n, err := t.counters.slot(int(SfwatchCounterCOUNTER_LOST))
	if err != nil {
		return 0, fmt.Errorf("reading lost events: %w", err)
	}
	return n, nil
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
