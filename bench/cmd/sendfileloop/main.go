// Command sendfileloop is the benchmark's tight-loop workload: N sendfile(2)
// calls of 4 KiB each from a regular file to /dev/null, alternating a NULL
// offset and a pointer offset, spread over T threads.
//
// Every call transfers a full chunk: each thread has its own descriptors,
// the pointer offset wraps to 0 at the end of the file, and the NULL-offset
// file is rewound with lseek(2) just before its position reaches the end,
// so no call returns 0 (EOF) and the syscall mix is the same for every
// observer (the lseek calls are counted and printed).
//
// It prints one line of JSON on stdout: the time of the loop alone (from
// the first call to the last, after setup), so that an observer's start-up
// cost is not counted as the workload's.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const chunk = 4096

func main() {
	n := flag.Int("n", 1_000_000, "total sendfile calls, split evenly over the threads")
	threads := flag.Int("threads", 1, "threads making calls, each locked to its own OS thread")
	size := flag.Int("size", 1<<20, "bytes in the source file (a multiple of 4096)")
	dir := flag.String("dir", os.TempDir(), "where to create the source file")
	flag.Parse()
	if *n < 1 || *threads < 1 || *size < chunk || *size%chunk != 0 {
		fmt.Fprintln(os.Stderr, "sendfileloop: want -n >= 1, -threads >= 1, -size a positive multiple of 4096")
		os.Exit(2)
	}

	f, err := os.CreateTemp(*dir, "sendfileloop-*")
	check(err)
	path := f.Name()
	defer os.Remove(path)
	check(f.Truncate(int64(*size)))
	buf := make([]byte, *size)
	for i := range buf {
		buf[i] = byte(i)
	}
	_, err = f.WriteAt(buf, 0)
	check(err)
	check(f.Close())

	// One P per calling thread: the runtime's own threads then never wait
	// for a P held by a thread inside sendfile, and the kernel alone
	// decides who runs (with fewer Ps than calling threads, the loop's
	// time depends on which thread holds a P).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(*threads)
	}
	workers := make([]*worker, *threads)
	for i := range workers {
		workers[i] = newWorker(path, *size, *n / *threads + boolInt(i < *n%*threads))
	}

	var ready, wg sync.WaitGroup
	startGate := make(chan struct{})
	ready.Add(len(workers))
	wg.Add(len(workers))
	for _, w := range workers {
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			ready.Done()
			<-startGate
			w.run()
		}()
	}
	ready.Wait()
	start := time.Now()
	close(startGate)
	wg.Wait()
	elapsed := time.Since(start)

	var res struct {
		Calls     int   `json:"calls"`
		Threads   int   `json:"threads"`
		Bytes     int64 `json:"bytes"`
		Rewinds   int   `json:"rewinds"`
		Short     int   `json:"short"`
		ElapsedNs int64 `json:"elapsed_ns"`
		// The process's own CPU time (all threads, setup included), so
		// that a tracer that started it can subtract it from the rusage
		// it gets back from wait4 and keep only its own.
		CPUNs int64 `json:"cpu_ns"`
	}
	res.Threads = *threads
	res.ElapsedNs = elapsed.Nanoseconds()
	for _, w := range workers {
		res.Calls += w.calls
		res.Bytes += w.bytes
		res.Rewinds += w.rewinds
		res.Short += w.short
		if w.err != nil {
			fmt.Fprintln(os.Stderr, "sendfileloop:", w.err)
			os.Exit(1)
		}
	}
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	res.CPUNs = ru.Utime.Nano() + ru.Stime.Nano()
	check(json.NewEncoder(os.Stdout).Encode(res))
}

type worker struct {
	in, out  int
	size     int64
	calls    int
	bytes    int64
	rewinds  int
	short    int
	err      error
	inPos    int64 // position of in's file offset (NULL-offset calls)
	explicit int64 // the pointer offset
}

func newWorker(path string, size, calls int) *worker {
	in, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	check(err)
	out, err := syscall.Open("/dev/null", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	check(err)
	return &worker{in: in, out: out, size: int64(size), calls: calls}
}

func (w *worker) run() {
	for i := range w.calls {
		var off unsafe.Pointer // NULL: in's file position moves
		if i%2 == 1 {
			if w.explicit >= w.size {
				w.explicit = 0
			}
			off = unsafe.Pointer(&w.explicit)
		} else if w.inPos >= w.size {
			if _, err := syscall.Seek(w.in, 0, 0); err != nil {
				w.err = err
				return
			}
			w.inPos = 0
			w.rewinds++
		}
		r, _, errno := syscall.Syscall6(syscall.SYS_SENDFILE, uintptr(w.out), uintptr(w.in), uintptr(off), chunk, 0, 0)
		if errno != 0 {
			w.err = fmt.Errorf("sendfile: %w", errno)
			return
		}
		if off == nil {
			w.inPos += int64(r)
		}
		if r != chunk {
			w.short++
		}
		w.bytes += int64(r)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendfileloop:", err)
		os.Exit(1)
	}
}
