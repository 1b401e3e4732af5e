package loader

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs")
	}
}

// ownCgroup returns the id and level of this process's cgroup v2 group.
func ownCgroup(t *testing.T) (uint64, uint32) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var root string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 8 && strings.Contains(line, " - cgroup2 ") {
			root = f[4]
		}
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var rel string
	for _, line := range strings.Split(string(cg), "\n") {
		if strings.HasPrefix(line, "0::") {
			rel = strings.TrimPrefix(line, "0::")
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, rel), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino, uint32(strings.Count(strings.Trim(rel, "/"), "/") + map[bool]int{true: 0, false: 1}[strings.Trim(rel, "/") == ""])
}

func TestValidateRingBufSize(t *testing.T) {
	for _, size := range []int{0, 1000, 4097, 3 << 20} {
		if ValidateRingBufSize(size) == nil {
			t.Errorf("ValidateRingBufSize(%d) = nil, want an error", size)
		}
	}
	for _, size := range []int{4096, 1 << 20, DefaultRingBufSize} {
		if err := ValidateRingBufSize(size); err != nil {
			t.Errorf("ValidateRingBufSize(%d) = %v", size, err)
		}
	}
}

// TestCountsAndEvents watches this test's own cgroup and makes known calls
// from one locked thread; other processes of the group may add calls, so
// events are matched by thread id and totals are lower bounds.
func TestCountsAndEvents(t *testing.T) {
	requireRoot(t)
	id, level := ownCgroup(t)
	tr, err := Open(Config{CgroupID: id, CgroupLevel: level})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	in, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

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

	s, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Counters.Get(SfwatchCounterCOUNTER_CALLS); c < n+2 {
		t.Errorf("calls = %d, want >= %d", c, n+2)
	}
	if c := s.Counters.Get(SfwatchCounterCOUNTER_OFFSET_PTR); c < 1 {
		t.Errorf("offset_ptr = %d, want >= 1", c)
	}
	if s.ErrnoCounts[syscall.EBADF] < 1 {
		t.Errorf("errno counts = %v, want EBADF", s.ErrnoCounts)
	}
	var hist uint64
	for _, b := range s.LatencyLog2 {
		hist += b
	}
	if hist != s.Counters.Get(SfwatchCounterCOUNTER_CALLS) {
		t.Errorf("histogram holds %d calls, counters %d", hist, s.Counters.Get(SfwatchCounterCOUNTER_CALLS))
	}
}
