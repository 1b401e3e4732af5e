package ringreader

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/loader/loadertest"
)

// TestDrainWaitFlushClose drives the batch consumer the way a session does:
// Drain hands over every committed record in place and in order, Wait ends
// at the deadline without a wakeup (below the threshold), Flush ends Wait,
// and after Close every call fails instead of touching unmapped memory.
func TestDrainWaitFlushClose(t *testing.T) {
	tracer, in, out := loadertest.OpenOwn(t, 1<<20)
	r, err := New(tracer.Maps().Events)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	runtime.LockOSThread()
	tid := uint32(unix.Gettid())
	const n = 200
	for i := range n {
		off := int64(i)
		unix.Syscall6(unix.SYS_SENDFILE, out.Fd(), in.Fd(), uintptr(unsafe.Pointer(&off)), 1, 0, 0)
	}
	runtime.UnlockOSThread()

	// Far below the wakeup threshold: no wakeup, the deadline ends Wait.
	r.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if err := r.Wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait = %v, want the deadline", err)
	}
	var mine []int64
	if _, err := r.Drain(func(raw []byte) error {
		if len(raw) != int(unsafe.Sizeof(loader.SfwatchEvent{})) {
			t.Fatalf("record of %d bytes", len(raw))
		}
		e := (*loader.SfwatchEvent)(unsafe.Pointer(&raw[0]))
		if e.Tid == tid {
			mine = append(mine, e.OffsetBefore)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(mine) != n {
		t.Fatalf("drained %d events of thread %d, want %d", len(mine), tid, n)
	}
	for i, off := range mine {
		if off != int64(i) {
			t.Fatalf("event %d has offset %d: out of order", i, off)
		}
	}
	stop := errors.New("stop")
	if _, err := r.Drain(func([]byte) error { return stop }); err != nil && !errors.Is(err, stop) {
		t.Fatalf("Drain = %v", err)
	}

	r.SetDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { done <- r.Wait() }()
	time.Sleep(20 * time.Millisecond)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ringbuf.ErrFlushed) {
			t.Fatalf("Wait after Flush = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Flush did not end Wait")
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Drain(func([]byte) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Drain after Close = %v, want os.ErrClosed", err)
	}
	if err := r.Wait(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Wait after Close = %v, want os.ErrClosed", err)
	}
}

// TestMapsAsItGoesAndWraps: the data pages are mapped as the producer
// reaches them, from 64 KiB to the whole ring, and records keep their
// order and content across three turns of the ring, those that straddle
// its end included (records of 96 bytes do not divide 1 MiB).
func TestMapsAsItGoesAndWraps(t *testing.T) {
	const size = 1 << 20
	tracer, in, out := loadertest.OpenOwn(t, size)
	r, err := New(tracer.Maps().Events)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.mapped != firstMapped {
		t.Fatalf("mapped %d bytes at first, want %d", r.mapped, firstMapped)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	var sent, got int64
	for sent < 3*size/96 {
		for range 2000 {
			off := sent
			unix.Syscall6(unix.SYS_SENDFILE, out.Fd(), in.Fd(), uintptr(unsafe.Pointer(&off)), 1, 0, 0)
			sent++
		}
		if _, err := r.Drain(func(raw []byte) error {
			e := (*loader.SfwatchEvent)(unsafe.Pointer(&raw[0]))
			if e.Tid != tid {
				return nil
			}
			if e.OffsetBefore != got {
				t.Fatalf("event %d has offset %d", got, e.OffsetBefore)
			}
			got++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got != sent || r.mapped != size {
		t.Fatalf("drained %d of %d events, %d bytes mapped; want all, and the whole ring", got, sent, r.mapped)
	}
}
