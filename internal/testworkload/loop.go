package testworkload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets is the offset argument a loop's calls pass.
type Offsets int

const (
	// Null passes NULL: the descriptor's file position moves.
	Null Offsets = iota
	// Pointer passes a pointer to 0: every call reads [0, 4096).
	Pointer
	// Alternate passes NULL on even calls and a pointer on odd ones.
	Alternate
)

// Loop is a sendfile loop: each thread makes N calls of 4 KiB from a file
// of Size bytes to /dev/null, through descriptors of its own, so that its
// NULL-offset calls move a file position no other thread touches and the
// totals are known exactly (Expected).
type Loop struct {
	// Threads is how many threads make the calls, each a goroutine locked
	// to an OS thread of its own (so tids are distinct). 0: the calling
	// goroutine alone, on the thread it is on (a workload's main goroutine
	// stays on the main thread: tid == pid, and the thread that moves the
	// process is the one that calls).
	Threads int
	N       int
	Offsets Offsets
	// Size is the file's size, a multiple of 4096; FileSize when 0.
	Size int64
	// Full makes every call a full transfer: a NULL-offset descriptor is
	// rewound before it reaches the end of the file, and a call that fails
	// or moves less than 4 KiB ends the loop with an error. Otherwise a
	// NULL-offset call at the end of the file returns 0 (EOF) and the
	// descriptor is rewound after it, and results are not checked.
	Full bool
	// Pin runs every thread on one CPU, the first the process may use, so
	// that --sample's per-CPU cycle is one cycle.
	Pin bool
}

// Totals are what a loop's calls returned, summed over its threads.
type Totals struct {
	Calls, Bytes, EOF, Null, Pointer uint64
}

func (t *Totals) add(o Totals) {
	t.Calls += o.Calls
	t.Bytes += o.Bytes
	t.EOF += o.EOF
	t.Null += o.Null
	t.Pointer += o.Pointer
}

func (l Loop) size() int64 {
	if l.Size == 0 {
		return FileSize
	}
	return l.Size
}

// Run makes the loop's calls and returns what they returned.
func (l Loop) Run() (Totals, error) {
	dir, err := os.MkdirTemp("", "sfwatch-loop-")
	if err != nil {
		return Totals{}, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, make([]byte, l.size()), 0o644); err != nil {
		return Totals{}, err
	}
	var cpu unix.CPUSet
	if l.Pin {
		if err := unix.SchedGetaffinity(0, &cpu); err != nil {
			return Totals{}, err
		}
		first := -1
		for i := 0; i < 1024 && first < 0; i++ {
			if cpu.IsSet(i) {
				first = i
			}
		}
		cpu.Zero()
		cpu.Set(first)
	}
	if l.Threads == 0 {
		return l.thread(path, &cpu)
	}
	var (
		mu    sync.Mutex
		total Totals
		errs  []error
		wg    sync.WaitGroup
	)
	for range l.Threads {
		wg.Go(func() {
			runtime.LockOSThread()
			mine, err := l.thread(path, &cpu)
			mu.Lock()
			defer mu.Unlock()
			total.add(mine)
			errs = append(errs, err)
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// thread is one thread's calls, on the calling thread.
func (l Loop) thread(path string, cpu *unix.CPUSet) (Totals, error) {
	var t Totals
	if l.Pin {
		if err := unix.SchedSetaffinity(0, cpu); err != nil {
			return t, err
		}
	}
	in, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return t, err
	}
	defer unix.Close(in)
	out, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return t, err
	}
	defer unix.Close(out)
	size := l.size()
	off := new(int64) // on the heap, which Go never moves
	pos := int64(0)   // the NULL-offset descriptor's position, when Full
	for i := range l.N {
		var offset uintptr // NULL: the file position moves
		if l.Offsets == Pointer || l.Offsets == Alternate && i%2 == 1 {
			*off = 0
			offset = uintptr(unsafe.Pointer(off))
			t.Pointer++
		} else {
			if l.Full && pos >= size {
				unix.Seek(in, 0, 0)
				pos = 0
			}
			t.Null++
		}
		r, _, errno := unix.Syscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), offset, 4096, 0, 0)
		t.Calls++
		switch {
		case l.Full && (errno != 0 || r != 4096):
			return t, fmt.Errorf("sendfile: %d, %v", int64(r), errno)
		case errno != 0:
		case r == 0:
			t.EOF++
			if offset == 0 {
				unix.Seek(in, 0, 0) // end of file: rewind
			}
		default:
			t.Bytes += uint64(r)
			if offset == 0 {
				pos += int64(r)
			}
		}
	}
	runtime.KeepAlive(off)
	return t, nil
}

// Expected computes, from what Run does, the exact totals of the loop: a
// NULL-offset call reads the next 4 KiB of its thread's descriptor and,
// unless Full, returns 0 at the end of the file (then rewinds); a
// pointer-offset call reads [0, 4096).
func (l Loop) Expected() Totals {
	n := l.N
	null := n
	switch l.Offsets {
	case Pointer:
		null = 0
	case Alternate:
		null = (n + 1) / 2 // i = 0, 2, 4, ...
	}
	eof := 0
	if !l.Full {
		every := int(l.size()/4096) + 1 // the full reads, then 0
		eof = null / every
	}
	per := Totals{
		Calls:   uint64(n),
		Bytes:   uint64(n-eof) * 4096,
		EOF:     uint64(eof),
		Null:    uint64(null),
		Pointer: uint64(n - null),
	}
	threads := uint64(max(l.Threads, 1))
	return Totals{per.Calls * threads, per.Bytes * threads, per.EOF * threads, per.Null * threads, per.Pointer * threads}
}
