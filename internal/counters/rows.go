package counters

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
)

// cpuRows is a BPF array laid out as one row of slots per CPU (counters
// and latency_log2 in bpf/sfwatch.c), read through its memory: no bpf
// syscall, which would hold the CPU's BPF-active flag while it reads, and
// make a kprobe that fires there meanwhile skip.
type cpuRows struct {
	mem  *ebpf.Memory
	row  int // slots per CPU
	size int // bytes: a row per possible CPU
}

// newCPURows maps m, which the loader sized to a row per possible CPU.
func newCPURows(m *ebpf.Map) (*cpuRows, error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("counting possible CPUs: %w", err)
	}
	mem, err := m.Memory()
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", m, err)
	}
	return &cpuRows{mem: mem, row: int(m.MaxEntries()) / cpus, size: 8 * int(m.MaxEntries())}, nil
}

// sum adds every CPU's row into dst (at most a row long), slot by slot.
// Safe for concurrent use (scrapes run in parallel): each call reads into
// its own buffer, a few KiB.
func (r *cpuRows) sum(dst []uint64) error {
	buf := make([]byte, r.size)
	if _, err := r.mem.ReadAt(buf, 0); err != nil {
		return err
	}
	clear(dst)
	for cpu := range r.size / 8 / r.row {
		for i := range dst {
			dst[i] += binary.NativeEndian.Uint64(buf[(cpu*r.row+i)*8:])
		}
	}
	return nil
}

// slot sums one slot over the CPUs, reading only it.
func (r *cpuRows) slot(i int) (uint64, error) {
	var n uint64
	var b [8]byte
	for cpu := range r.size / 8 / r.row {
		if _, err := r.mem.ReadAt(b[:], int64((cpu*r.row+i)*8)); err != nil {
			return 0, err
		}
		n += binary.NativeEndian.Uint64(b[:])
	}
	return n, nil
}
