package loader

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
	mem *ebpf.Memory
	row int    // slots per CPU
	buf []byte // one read of the whole map
}

// perCPU gives spec one row of its max_entries slots for every possible
// CPU, and returns the row's length.
func perCPU(spec *ebpf.MapSpec) (row int, err error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return 0, fmt.Errorf("counting possible CPUs: %w", err)
	}
	row = int(spec.MaxEntries)
	spec.MaxEntries *= uint32(cpus)
	return row, nil
}

func newCPURows(m *ebpf.Map, row int) (*cpuRows, error) {
	mem, err := m.Memory()
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", m, err)
	}
	return &cpuRows{mem: mem, row: row, buf: make([]byte, 8*m.MaxEntries())}, nil
}

// sum adds every CPU's row into dst (at most a row long), slot by slot.
func (r *cpuRows) sum(dst []uint64) error {
	if _, err := r.mem.ReadAt(r.buf, 0); err != nil {
		return err
	}
	clear(dst)
	for cpu := range len(r.buf) / 8 / r.row {
		for i := range dst {
			dst[i] += binary.NativeEndian.Uint64(r.buf[(cpu*r.row+i)*8:])
		}
	}
	return nil
}

// slot sums one slot over the CPUs, reading only it.
func (r *cpuRows) slot(i int) (uint64, error) {
	var n uint64
	var b [8]byte
	for cpu := range len(r.buf) / 8 / r.row {
		if _, err := r.mem.ReadAt(b[:], int64((cpu*r.row+i)*8)); err != nil {
			return 0, err
		}
		n += binary.NativeEndian.Uint64(b[:])
	}
	return n, nil
}
