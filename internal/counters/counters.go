// Package counters decodes the kernel's counter maps (counters,
// latency_log2 and errno_counts in bpf/sfwatch.c) into named types: the
// exact totals of a run, whatever happened to the event stream. It reads
// them through memory, never through the bpf syscall (see cpuRows).
package counters

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// Snapshot is every kernel-side total at one moment.
type Snapshot struct {
	Totals      Totals
	ErrnoCounts map[syscall.Errno]uint64 // failed calls by errno; only non-zero entries
	LatencyLog2 [64]uint64               // bucket i: durations in [2^(i-1), 2^i) ns
	// Skipped counts, by program (every one of loader.Programs but
	// sched_process_exit, see MissedExits), the times the kernel did not
	// run it: its recursion misses. The kernel runs one
	// tracing program at a time per CPU, and from Linux 7.2 syscall
	// tracepoints run BPF preemptibly, so a thread preempted inside a
	// program makes the same program skip for every other thread on that
	// CPU (hence the kprobe mode, see loader.AttachMode). In kprobe mode the
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

// Reader reads the counter maps of one loaded tracer. Safe for concurrent
// use (scrapes run in parallel).
type Reader struct {
	counters, latency *cpuRows
	errnos            *ebpf.Map
	// skips reads Snapshot.Skipped and MissedExits (loader.Tracer.Skips):
	// they come from the programs, not from a map.
	skips func() (map[string]uint64, uint64, error)
}

// New maps the counter maps of maps; skips gives the programs' skips.
// The maps must stay open while the Reader is used.
func New(maps *loader.SfwatchMaps, skips func() (map[string]uint64, uint64, error)) (*Reader, error) {
	r := &Reader{errnos: maps.ErrnoCounts, skips: skips}
	var err error
	if r.counters, err = newCPURows(maps.Counters); err != nil {
		return nil, err
	}
	if r.latency, err = newCPURows(maps.LatencyLog2); err != nil {
		return nil, err
	}
	return r, nil
}

// Snapshot reads and sums the CPUs' counts. The counts are exact whatever
// happened to the event stream.
func (r *Reader) Snapshot() (Snapshot, error) {
	var s Snapshot
	// Through memory, no syscall: see counters in bpf/sfwatch.c.
	var c counterSums
	if err := r.counters.sum(c[:]); err != nil {
		return s, fmt.Errorf("reading counters: %w", err)
	}
	s.Totals = c.totals()
	if err := r.latency.sum(s.LatencyLog2[:]); err != nil {
		return s, fmt.Errorf("reading latency histogram: %w", err)
	}
	mem, err := r.errnos.Memory()
	if err != nil {
		return s, fmt.Errorf("reading errno counts: %w", err)
	}
	errnos := make([]byte, 8*r.errnos.MaxEntries())
	if _, err := mem.ReadAt(errnos, 0); err != nil {
		return s, fmt.Errorf("reading errno counts: %w", err)
	}
	s.ErrnoCounts = make(map[syscall.Errno]uint64)
	for errno := range len(errnos) / 8 {
		if n := binary.NativeEndian.Uint64(errnos[errno*8:]); n != 0 {
			s.ErrnoCounts[syscall.Errno(errno)] = n
		}
	}
	if s.Skipped, s.MissedExits, err = r.skips(); err != nil {
		return s, err
	}
	return s, nil
}

// Lost is the events lost so far (COUNTER_LOST), for a notice while the
// programs run: one slot per CPU, read through memory.
func (r *Reader) Lost() (uint64, error) {
	n, err := r.counters.slot(int(loader.SfwatchCounterCOUNTER_LOST))
	if err != nil {
		return 0, fmt.Errorf("reading lost events: %w", err)
	}
	return n, nil
}
