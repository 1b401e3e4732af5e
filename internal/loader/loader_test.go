package loader

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

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// ownCgroup returns the id and level of this process's cgroup v2 group.
func ownCgroup(t *testing.T) (uint64, uint32) {
	t.Helper()
	g, err := cgroup.OfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	return g.ID, g.Level
}

func TestValidateRingBufSize(t *testing.T) {
	for _, size := range []int{0, 1000, 4097, 3 << 20, 2 * MaxRingBufSize, 1 << 32, 1 << 40} {
		if ValidateRingBufSize(size) == nil {
			t.Errorf("ValidateRingBufSize(%d) = nil, want an error", size)
		}
	}
	for _, size := range []int{4096, 1 << 20, DefaultRingBufSize, MaxRingBufSize} {
		if err := ValidateRingBufSize(size); err != nil {
			t.Errorf("ValidateRingBufSize(%d) = %v", size, err)
		}
	}
}

// TestCountsAndEvents watches this test's own cgroup and makes known calls
// from one locked thread; other processes of the group may add calls, so
// events are matched by thread id and totals are lower bounds.
func TestCountsAndEvents(t *testing.T) {
	tr, in, out := openOwnTracer(t, 0)

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

	tr.SetDeadline(time.Now().Add(200 * time.Millisecond))
	var mine []SfwatchEvent
	var rec ringbuf.Record
	for {
		err := tr.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := *(*SfwatchEvent)(unsafe.Pointer(&rec.RawSample[0]))
		if e.Tid == tid {
			mine = append(mine, e)
		}
	}
	if len(mine) != n+2 {
		t.Fatalf("got %d events from thread %d, want %d", len(mine), tid, n+2)
	}
	ptr := mine[n]
	if ptr.OffsetBefore != 100 || ptr.OffsetAfter != 4196 || ptr.Ret != 4096 ||
		ptr.Flags != uint32(SfwatchEventFlagEVENT_OFFSET_BEFORE_OK|SfwatchEventFlagEVENT_OFFSET_AFTER_OK) {
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
	s, err := tr.Snapshot()
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

// openOwnTracer opens a tracer on this test's own cgroup (ringBufSize 0:
// the default) and the files to call sendfile with: this binary as input,
// /dev/null as output. All are closed when the test ends.
func openOwnTracer(t *testing.T, ringBufSize int) (tr *Tracer, in, out *os.File) {
	t.Helper()
	testenv.RequirePrivileged(t)
	id, level := ownCgroup(t)
	tr, err := Open(Config{CgroupID: id, CgroupLevel: level, RingBufSize: ringBufSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if in, err = os.Open("/proc/self/exe"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	if out, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return tr, in, out
}

func TestAttachMode(t *testing.T) {
	for _, c := range []struct {
		arch, release string
		pmu, want     bool
	}{
		{"amd64", "6.18.44-fc-v782", true, false},
		{"amd64", "7.1.9", true, false},
		{"amd64", "7.2.13+deb14-cloud-amd64", true, true},
		{"amd64", "7.3.4+deb13-cloud-amd64", false, false}, // no kprobes
		{"arm64", "7.3.4", true, false},                    // x86-64 registers only
		{"amd64", "8.0.1", true, true},
		{"amd64", "garbage", true, false},
	} {
		if got := attachMode(c.arch, c.release, c.pmu); got.Kprobes != c.want || got.Why == "" {
			t.Errorf("attachMode(%s, %s, %v) = %+v, want kprobes %v", c.arch, c.release, c.pmu, got, c.want)
		}
	}
}
