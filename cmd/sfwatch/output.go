package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// outputGiveUp bounds how long sfwatch, once it is ending, waits for an
// output that takes no data (a pipe or FIFO that nobody reads, a terminal
// stopped with Ctrl-S), and how long it waits for a reader of an -o FIFO.
const outputGiveUp = 3 * time.Second

// boundedWriter writes to w from a goroutine of its own, so that a write
// that blocks can be abandoned. Until bound is called a write takes as long
// as w does: while the run goes on, a slow reader only costs events, which
// the kernel counts as lost. After bound, a write that has not finished
// within outputGiveUp fails, and so does every later one at once: sfwatch
// exits, the goroutine still in write(2).
type boundedWriter struct {
	name string
	w    io.Writer

	mu      sync.Mutex // one write at a time
	err     error      // the write that gave up; sticky
	buf     []byte     // a copy of a short write in progress
	reqs    chan []byte
	results chan writeResult
	start   sync.Once

	bounded   chan struct{} // closed by bound
	boundOnce sync.Once
}

type writeResult struct {
	n   int
	err error
}

func newBoundedWriter(w io.Writer, name string) *boundedWriter {
	return &boundedWriter{
		name:    name,
		w:       w,
		reqs:    make(chan []byte),
		results: make(chan writeResult, 1),
		bounded: make(chan struct{}),
	}
}

// stderr is sfwatch's own stderr, for every message of run and attach.
var stderr = newBoundedWriter(os.Stderr, "stderr")

func (b *boundedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	b.start.Do(func() {
		go func() {
			for p := range b.reqs {
				n, err := b.w.Write(p)
				b.results <- writeResult{n, err}
			}
		}()
	})
	// An abandoned write is still being read by the goroutine: a caller
	// must not change p afterwards. fmt reuses its buffers, so short writes
	// (our lines) are copied; long ones come from the stream's
	// bufio.Writer, which never touches its buffer after a failed write
	// (and copying 64 KiB per flush would cost every event).
	if len(p) <= 4096 {
		b.buf = append(b.buf[:0], p...)
		p = b.buf
	}
	b.reqs <- p // the goroutine is idle: the previous write has finished
	select {
	case r := <-b.results:
		return r.n, r.err
	case <-b.bounded:
	}
	timer := time.NewTimer(outputGiveUp)
	defer timer.Stop()
	select {
	case r := <-b.results:
		return r.n, r.err
	case <-timer.C:
	}
	b.buf = nil // still being written
	b.err = fmt.Errorf("%s took no data for %v at the end of the run (nobody reads it); gave up on it", b.name, outputGiveUp)
	return 0, b.err
}

// bound makes every write from now on give up after outputGiveUp,
// including one in progress.
func (b *boundedWriter) bound() {
	b.boundOnce.Do(func() { close(b.bounded) })
}

// gaveUp returns the error of the write that gave up, or nil.
func (b *boundedWriter) gaveUp() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// openOutput creates or truncates the -o file. A FIFO is opened without
// blocking: open(2) would otherwise wait, unkillably for sfwatch's purposes,
// until some process opens it for reading; its reader gets outputGiveUp to
// appear.
func openOutput(path string) (*os.File, error) {
	deadline := time.Now().Add(outputGiveUp)
	for {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NONBLOCK, 0o666)
		if err == nil {
			// Writes block again (in the boundedWriter's goroutine), as
			// for any other output, whatever the file is.
			if err := setBlocking(f); err != nil {
				f.Close()
				return nil, fmt.Errorf("opening output file: %w", err)
			}
			return f, nil
		}
		if fi, serr := os.Stat(path); !errors.Is(err, syscall.ENXIO) || serr != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
			return nil, fmt.Errorf("creating output file: %w", err)
		}
		if time.Now().After(deadline) {
			return nil, usageError("-o %s: a FIFO that no process opened for reading within %v; start its reader first", path, outputGiveUp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openBounded opens the output file at path (openOutput) behind a
// boundedWriter named name. close closes the file, unless a write gave up
// on it: Close would wait for that write, and exiting frees it.
func openBounded(path, name string) (out *boundedWriter, close func(), err error) {
	file, err := openOutput(path)
	if err != nil {
		return nil, nil, err
	}
	out = newBoundedWriter(file, name)
	return out, func() {
		if out.gaveUp() == nil {
			file.Close()
		}
	}, nil
}

func setBlocking(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}
