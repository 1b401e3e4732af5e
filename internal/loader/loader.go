// Package loader loads sfwatch's BPF programs, points their cgroup filter at
// one group, attaches them to the sendfile64 syscall tracepoints (and to
// signal_deliver, which settles calls a signal interrupts), and owns
// the ring-buffer reader and the kernel-side counters.
package loader

import (
	"errors"
	"fmt"
	"maps"
	"os"
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
	objs   SfwatchObjects
	links  []link.Link
	reader *ring
}

// tracepoints are attached in this order: what settles a call before what
// starts one, so that no call is ever entered without its exit (and, when a
// signal interrupts it, its settling) being watched.
//
// The follow programs come first: the command's exec, and every fork and
// move of its tasks, are seen before its first sendfile can be.
var tracepoints = []struct {
	group, name string
	// raw attaches as a raw tracepoint: signal_deliver's link then closes
	// without the grace periods a perf tracepoint event waits for.
	raw bool
	// follow programs are attached only with Config.Follow.
	follow bool
	prog   func(*SfwatchObjects) *ebpf.Program
}{
	{"sched", "sched_process_exit", true, true, func(o *SfwatchObjects) *ebpf.Program { return o.SchedProcessExit }},
	{"cgroup", "cgroup_attach_task", true, true, func(o *SfwatchObjects) *ebpf.Program { return o.CgroupAttachTask }},
	{"sched", "sched_process_fork", true, true, func(o *SfwatchObjects) *ebpf.Program { return o.SchedProcessFork }},
	{"sched", "sched_process_exec", true, true, func(o *SfwatchObjects) *ebpf.Program { return o.SchedProcessExec }},
	{"signal", "signal_deliver", true, false, func(o *SfwatchObjects) *ebpf.Program { return o.SignalDeliver }},
	{"syscalls", "sys_exit_sendfile64", false, false, func(o *SfwatchObjects) *ebpf.Program { return o.SysExitSendfile64 }},
	{"syscalls", "sys_enter_sendfile64", false, false, func(o *SfwatchObjects) *ebpf.Program { return o.SysEnterSendfile64 }},
}

// Tracepoints names, as "group/name", every tracepoint Open attaches to, in
// the order it attaches them.
func Tracepoints() []string {
	names := make([]string, len(tracepoints))
	for i, tp := range tracepoints {
		names[i] = tp.group + "/" + tp.name
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
	if err := EnsureTracefs(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op here.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock limit: %w", err)
	}

	spec, err := LoadSfwatch()
	if err != nil {
		return nil, fmt.Errorf("loading BPF spec: %w", err)
	}
	spec.Maps[SfwatchMapEvents].MaxEntries = uint32(cfg.RingBufSize)
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

	t := &Tracer{}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
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
	for _, tp := range tracepoints {
		if tp.follow && !cfg.Follow {
			continue
		}
		var l link.Link
		if tp.raw {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: tp.prog(&t.objs)})
		} else {
			l, err = link.Tracepoint(tp.group, tp.name, tp.prog(&t.objs), nil)
		}
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("attaching tracepoint %s/%s: %w", tp.group, tp.name, err)
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

// followConsts are the constants of the follow programs: the group's path
// as the kernel prints it, and where task_struct keeps pid and tgid.
func followConsts(cgroupPath string) (map[string]any, error) {
	path := strings.TrimSuffix(cgroupPath, "/")
	var buf [256]byte // TARGET_PATH_MAX in bpf/sfwatch.c
	if len(path) > len(buf) {
		return nil, fmt.Errorf("following tasks of group %s: its path is longer than %d bytes", cgroupPath, len(buf))
	}
	copy(buf[:], path)
	pid, tgid, err := taskIDOffsets()
	if err != nil {
		return nil, fmt.Errorf("finding pid and tgid in struct task_struct: %w", err)
	}
	return map[string]any{
		"target_path":     buf,
		"target_path_len": uint32(len(path)),
		"task_pid_off":    pid,
		"task_tgid_off":   tgid,
	}, nil
}

// Followed lists the tasks of the run that left its group and are
// followed since (by thread id; a process's is its pid): what a cleanup
// must kill besides the group.
func (t *Tracer) Followed() ([]int, error) {
	var (
		tid, flags uint32
		ids        []int
	)
	it := t.objs.Members.Iterate()
	for it.Next(&tid, &flags) {
		if flags&uint32(SfwatchMemberFlagMEMBER_FOLLOWED) != 0 {
			ids = append(ids, int(tid))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading followed tasks: %w", err)
	}
	return ids, nil
}

// Close detaches the programs and frees every map. Idempotent.
func (t *Tracer) Close() error {
	errs := []error{t.Detach()}
	if t.reader != nil {
		// Kept, closed: a consumer still running gets os.ErrClosed.
		errs = append(errs, t.reader.close())
	}
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Detach stops new calls from being traced while keeping the maps and the
// ring buffer readable, so the caller can drain and read final totals.
//
// The links are closed in parallel: each close waits for an RCU grace
// period in the kernel (about 27 ms here), and concurrent closes share it.
func (t *Tracer) Detach() error {
	errs := make([]error, len(t.links))
	var wg sync.WaitGroup
	for i, l := range t.links {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	t.links = nil
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
	// Skipped counts, by program (its tracepoint's name, every one of
	// Tracepoints), the times the kernel did not run it: its recursion
	// misses. The kernel runs one tracing program at a time per CPU, and
	// from Linux 7.2 syscall tracepoints run BPF preemptibly, so a thread
	// preempted inside a program makes the same program skip for every
	// other thread on that CPU. A skipped entry or exit is a call missing
	// from every total, and a skip cannot be tied to a process: any thread
	// on the machine that hit the tracepoint may have been skipped.
	Skipped map[string]uint64
}

// Snapshot reads and sums the per-CPU maps. The counts are exact whatever
// happened to the event stream.
func (t *Tracer) Snapshot() (Snapshot, error) {
	var s Snapshot
	if err := sumPerCPU(t.objs.Counters, s.Counters[:]); err != nil {
		return s, fmt.Errorf("reading counters: %w", err)
	}
	if err := sumPerCPU(t.objs.LatencyLog2, s.LatencyLog2[:]); err != nil {
		return s, fmt.Errorf("reading latency histogram: %w", err)
	}
	errnos := make([]uint64, t.objs.ErrnoCounts.MaxEntries())
	if err := sumPerCPU(t.objs.ErrnoCounts, errnos); err != nil {
		return s, fmt.Errorf("reading errno counts: %w", err)
	}
	s.ErrnoCounts = make(map[syscall.Errno]uint64)
	for errno, n := range errnos {
		if n != 0 {
			s.ErrnoCounts[syscall.Errno(errno)] = n
		}
	}
	s.Skipped = make(map[string]uint64, len(tracepoints))
	for _, tp := range tracepoints {
		// Program info carries recursion misses since Linux 5.12 (zero
		// before), whether or not BPF statistics are enabled.
		stats, err := tp.prog(&t.objs).Stats()
		if err != nil {
			return s, fmt.Errorf("reading skips of %s: %w", tp.name, err)
		}
		s.Skipped[tp.name] = stats.RecursionMisses
	}
	return s, nil
}

// sumPerCPU reads a per-CPU array of u64 into dst, one sum per key, with
// one batch lookup for the whole map.
func sumPerCPU(m *ebpf.Map, dst []uint64) error {
	n := int(m.MaxEntries())
	keys := make([]uint32, n)
	values := make([]uint64, n*ebpf.MustPossibleCPU())
	var cursor ebpf.MapBatchCursor
	got, err := m.BatchLookup(&cursor, keys, values, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	if got != n {
		return fmt.Errorf("batch lookup returned %d of %d entries", got, n)
	}
	cpus := len(values) / n
	for i := range n {
		var sum uint64
		for _, v := range values[i*cpus : (i+1)*cpus] {
			sum += v
		}
		dst[keys[i]] = sum
	}
	return nil
}
