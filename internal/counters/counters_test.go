package counters

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/loader/loadertest"
	"github.com/sfwatch/sfwatch/internal/ringreader"
)

// TestCountsAndEvents watches this test's own cgroup and makes known calls
// from one locked thread; other processes of the group may add calls, so
// events are matched by thread id and totals are lower bounds.
func TestCountsAndEvents(t *testing.T) {
	tr, in, out := loadertest.OpenOwn(t, 0)

	runtime.LockOSThread()
	tid := uint32(unix.Gettid())
	off := int64(100)
	const n = 50
	for range n {
		unix.Syscall6(unix.SYS_SENDFILE, out.Fd(), in.Fd(), 0, 4096, 0, 0)
	}
	_, _, errno := unix.Syscall6(unix.SYS_SENDFILE, out.Fd(), in.Fd(), uintptr(unsafe.Pointer(&off)), 4096, 0, 0)
	_, _, ebadf := unix.Syscall6(unix.SYS_SENDFILE, 999, in.Fd(), 0, 4096, 0, 0)
	runtime.UnlockOSThread()
	if errno != 0 || ebadf != syscall.EBADF {
		t.Fatalf("setup calls: %v, %v", errno, ebadf)
	}

	r, err := ringreader.New(tr.Maps().Events)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(200 * time.Millisecond))
	var mine []loader.SfwatchEvent
	var rec ringbuf.Record
	for {
		err := r.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := *(*loader.SfwatchEvent)(unsafe.Pointer(&rec.RawSample[0]))
		if e.Tid == tid {
			mine = append(mine, e)
		}
	}
	if len(mine) != n+2 {
		t.Fatalf("got %d events from thread %d, want %d", len(mine), tid, n+2)
	}
	ptr := mine[n]
	if ptr.OffsetBefore != 100 || ptr.OffsetAfter != 4196 || ptr.Ret != 4096 ||
		ptr.Flags != uint32(loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK|loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK) {
		t.Errorf("pointer-offset event = %+v", ptr)
	}
	if bad := mine[n+1]; bad.Ret != -int64(syscall.EBADF) || bad.OutFd != 999 {
		t.Errorf("EBADF event = %+v", bad)
	}

	// Detached, the totals stop moving (other processes of the group may
	// still be calling sendfile), so they can be compared with each other.
	if err := tr.Detach(); err != nil {
		t.Fatal(err)
	}
	c, err := New(tr.Maps(), tr.Skips)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Totals.Calls; c < n+2 {
		t.Errorf("calls = %d, want >= %d", c, n+2)
	}
	if c := s.Totals.OffsetPtr; c < 1 {
		t.Errorf("offset_ptr = %d, want >= 1", c)
	}
	if s.ErrnoCounts[syscall.EBADF] < 1 {
		t.Errorf("errno counts = %v, want EBADF", s.ErrnoCounts)
	}
	var hist uint64
	for _, b := range s.LatencyLog2 {
		hist += b
	}
	if hist != s.Totals.Calls {
		t.Errorf("histogram holds %d calls, counters %d", hist, s.Totals.Calls)
	}
}
