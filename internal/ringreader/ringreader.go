// Package ringreader reads sfwatch's BPF ring buffer (the events map) in
// place: edge-triggered epoll, records handed out without a copy, the
// consumer position published once per batch. Whoever consumes the events
// owns the reader; the loader only hands over the map.
package ringreader

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Reader is sfwatch's consumer of the BPF ring buffer, used on the hot path
// instead of cilium/ebpf's ringbuf.Reader for three reasons (measured in
// bench/README.md):
//
//   - Batched wakeups only work with an edge-triggered epoll: the map's fd
//     polls readable while any byte is unread, so a level-triggered wait
//     (ringbuf.Reader's) returns at once whenever the program is busy, and
//     the reader spins in epoll_wait a few records at a time instead of
//     sleeping until the kernel side wakes it past the threshold.
//   - The consumer position is published once per batch (and every
//     publishEvery bytes), not once per record: every store to it is a
//     cache-line transfer that the producing CPU pays for at its next
//     reserve.
//   - Records are handed out in place, without a lock or a copy per record.
//
// The layout is the kernel's (kernel/bpf/ringbuf.c): page 0 holds the
// consumer position (read-write), page 1 the producer position, then the
// data pages (which the kernel maps twice in a row, so that a record that
// wraps around the end is contiguous: sfwatch maps them once, see open).
//
// Drain, ReadInto and Wait are called from one goroutine; Close may come
// from another at any time (a session that fails to start its child), so
// the mapped memory and the descriptors are only used under mu.
type Reader struct {
	mu       sync.Mutex
	consPage []byte // mmap'ed consumer page
	prodPage []byte // the producer page and the data's address space, read-only
	fd       int    // the map's, to map more data pages (ensure)
	mapped   uint64 // data bytes mapped so far, from the start
	consPos  *uint64
	prodPos  *uint64
	data     []byte // the data pages, once
	mask     uint64
	wrapped  []byte // a record that wraps around the end, copied

	epfd     int
	eventfd  int // written by Flush
	deadline time.Time

	// pendingErr is a deadline or flush seen by ReadInto, returned once
	// the records present at that time have been returned.
	pendingErr error
}

const (
	ringHeaderSize = 8       // struct bpf_ringbuf_hdr: u32 len, u32 pg_off
	ringBusyBit    = 1 << 31 // BPF_RINGBUF_BUSY_BIT: reserved, not committed yet
	ringDiscardBit = 1 << 30 // BPF_RINGBUF_DISCARD_BIT

	// publishEvery bounds how much the consumer reads before it tells
	// the kernel, so that a long drain frees space as it goes.
	publishEvery = 64 << 10
)

// New maps the ring buffer events (a BPF_MAP_TYPE_RINGBUF map). The
// reader holds the map's memory and watches its fd, so it outlives the
// map's descriptor.
func New(events *ebpf.Map) (*Reader, error) {
	r, err := open(events.FD(), int(events.MaxEntries()))
	if err != nil {
		return nil, fmt.Errorf("opening ring buffer reader: %w", err)
	}
	return r, nil
}

// NewFD maps the ring buffer behind fd, of size data bytes, without the
// bpf syscall (which an unprivileged process may not use): a run's ring
// buffer, received from the daemon, whose size the daemon told.
func NewFD(fd, size int) (*Reader, error) {
	if size < os.Getpagesize() || size&(size-1) != 0 {
		return nil, fmt.Errorf("opening ring buffer reader: size %d is not a power of two of pages", size)
	}
	r, err := open(fd, size)
	if err != nil {
		return nil, fmt.Errorf("opening ring buffer reader: %w", err)
	}
	return r, nil
}

// open maps the ring buffer behind fd, of size data bytes.
func open(fd, size int) (_ *Reader, err error) {
	page := os.Getpagesize()
	r := &Reader{mask: uint64(size - 1), epfd: -1, eventfd: -1, fd: -1}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.consPage, err = unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping ring buffer consumer page: %w", err)
	}
	// The data pages once, not twice as the kernel offers (the rare
	// record that wraps around the end is copied, see record), and as
	// the producer reaches them (ensure): the kernel maps every page of
	// a mapping at once, so a short run of an 8 MiB ring would pay most
	// of a millisecond to map it and as much to unmap it. The address
	// space is reserved whole, then mapped into piece by piece.
	if r.prodPage, err = unix.Mmap(-1, 0, page+size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		return nil, fmt.Errorf("reserving ring buffer address space: %w", err)
	}
	if _, err = unix.MmapPtr(fd, int64(page), unsafe.Pointer(&r.prodPage[0]), uintptr(page), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		return nil, fmt.Errorf("mapping ring buffer producer page: %w", err)
	}
	// Its own descriptor of the map: ensure maps more of it after the
	// caller's may be closed.
	if r.fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("duplicating the ring buffer's descriptor: %w", err)
	}
	r.consPos = (*uint64)(unsafe.Pointer(&r.consPage[0]))
	r.prodPos = (*uint64)(unsafe.Pointer(&r.prodPage[0]))
	r.data = r.prodPage[page:]
	if err := r.ensure(min(uint64(size), firstMapped)); err != nil {
		return nil, err
	}

	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("creating epoll instance: %w", err)
	}
	if r.eventfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	// Edge-triggered: a wakeup from the BPF side (past the threshold)
	// readies the fd once; data arriving below it does not.
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		return nil, fmt.Errorf("adding ring buffer to epoll: %w", err)
	}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, r.eventfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r.eventfd)}); err != nil {
		return nil, fmt.Errorf("adding eventfd to epoll: %w", err)
	}
	return r, nil
}

// firstMapped is how much data open maps at once: a short run's events.
const firstMapped = 64 << 10

// ensure maps the data pages up to n bytes from the start (at least
// twice what is mapped, so that a busy ring maps a few times in all).
// Under mu, or from open.
func (r *Reader) ensure(n uint64) error {
	if n <= r.mapped {
		return nil
	}
	page := uint64(os.Getpagesize())
	end := min(max(n, 2*r.mapped), uint64(len(r.data)))
	end = (end + page - 1) &^ (page - 1)
	addr := unsafe.Pointer(&r.data[r.mapped])
	// The data's file offset: the consumer page, the producer page, then
	// the data pages.
	if _, err := unix.MmapPtr(r.fd, int64(2*page+r.mapped), addr, uintptr(end-r.mapped), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		return fmt.Errorf("mapping ring buffer data: %w", err)
	}
	r.mapped = end
	return nil
}

// Close unmaps the buffer; every later call fails with os.ErrClosed.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.prodPage != nil {
		errs = append(errs, unix.Munmap(r.prodPage))
		r.prodPage, r.data = nil, nil
	}
	if r.consPage != nil {
		errs = append(errs, unix.Munmap(r.consPage))
		r.consPage = nil
	}
	for _, fd := range []*int{&r.epfd, &r.eventfd, &r.fd} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// errBusy: the next record is reserved but not committed yet.
var errBusy = errors.New("ring buffer record not committed yet")

// drain hands every committed record to fn in order, in place: raw is only
// valid during the call. It stops at the first record still being written
// (errBusy), or when fn fails, and publishes how far it read.
func (r *Reader) drain(fn func(raw []byte) error) (n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		return 0, fmt.Errorf("ring buffer: %w", os.ErrClosed)
	}
	cons := atomic.LoadUint64(r.consPos)
	published := cons
	defer func() {
		if cons != published {
			atomic.StoreUint64(r.consPos, cons)
		}
	}()
	for {
		prod := atomic.LoadUint64(r.prodPos)
		if cons == prod {
			return n, nil
		}
		// Written so far: everything below prod, the whole ring once
		// prod has gone round it.
		if err := r.ensure(min(prod, uint64(len(r.data)))); err != nil {
			return n, err
		}
		for cons < prod {
			// The atomic load orders the data after the kernel's xchg
			// that cleared the busy bit.
			hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
			if hdr&ringBusyBit != 0 {
				return n, errBusy
			}
			length := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
			start := (cons + ringHeaderSize) & r.mask
			next := cons + ringHeaderSize + (length+7)&^7
			if hdr&ringDiscardBit == 0 {
				if err := fn(r.record(start, length)); err != nil {
					return n, err
				}
				n++
			}
			cons = next
			if cons-published >= publishEvery {
				atomic.StoreUint64(r.consPos, cons)
				published = cons
			}
		}
	}
}

// record is the record of length bytes at start: in place, or copied
// when it wraps around the end of the data pages.
func (r *Reader) record(start, length uint64) []byte {
	if start+length <= uint64(len(r.data)) {
		return r.data[start : start+length]
	}
	first := uint64(len(r.data)) - start
	r.wrapped = append(append(r.wrapped[:0], r.data[start:]...), r.data[:length-first]...)
	return r.wrapped
}

// Drain hands every record committed so far to fn, in order and in place:
// raw is only valid during the call, and fn must not keep it. It returns
// how many records it handed over, and fn's first error. Records still
// being written are waited out: a program commits within microseconds of
// reserving.
func (r *Reader) Drain(fn func(raw []byte) error) (int, error) {
	total := 0
	for {
		n, err := r.drain(fn)
		total += n
		if err != errBusy {
			return total, err
		}
		runtime.Gosched()
	}
}

// Wait blocks until the BPF side wakes the reader (once the unread data
// passes the wakeup threshold), the deadline set with SetDeadline passes
// (os.ErrDeadlineExceeded), or Flush is called (ringbuf.ErrFlushed). It
// returns nil on a wakeup; records below the threshold are only picked up
// by the next Drain.
func (r *Reader) Wait() error {
	var events [2]unix.EpollEvent
	r.mu.Lock()
	epfd, eventfd := r.epfd, r.eventfd
	r.mu.Unlock()
	if epfd < 0 {
		return fmt.Errorf("ring buffer: %w", os.ErrClosed)
	}
	for {
		timeout := -1
		if !r.deadline.IsZero() {
			d := time.Until(r.deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((d + time.Millisecond - 1) / time.Millisecond)
		}
		// Closed meanwhile: EBADF, or the 100 ms deadline, ends this.
		n, err := unix.EpollWait(epfd, events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for ring buffer: %w", err)
		}
		if n == 0 {
			continue // timed out: the deadline check above decides
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == eventfd {
				var buf [8]byte
				unix.Read(eventfd, buf[:])
				return ringbuf.ErrFlushed
			}
		}
		return nil
	}
}

// Consume hands every record to handle until Flush, then returns nil once
// the records committed before it are handled. It sleeps until the BPF side
// wakes it (past the wakeup threshold) or interval passes, then drains
// everything there is in one batch, in place; idle is called each time it
// has caught up, and last.
func (r *Reader) Consume(interval time.Duration, handle func(raw []byte) error, idle func()) error {
	deadline := time.Now().Add(interval)
	r.SetDeadline(deadline)
	for {
		if _, err := r.Drain(handle); err != nil {
			return err
		}
		err := r.Wait()
		switch {
		case err == nil:
			// Woken past the threshold: a busy stream may wake us
			// before every deadline, so check it here too.
			if time.Now().Before(deadline) {
				continue
			}
			fallthrough
		case errors.Is(err, os.ErrDeadlineExceeded):
			if _, err := r.Drain(handle); err != nil {
				return err
			}
			idle()
			deadline = time.Now().Add(interval)
			r.SetDeadline(deadline)
		case errors.Is(err, ringbuf.ErrFlushed):
			if _, err := r.Drain(handle); err != nil {
				return err
			}
			idle()
			return nil
		default:
			return fmt.Errorf("reading ring buffer: %w", err)
		}
	}
}

// SetDeadline bounds the next ReadInto and Wait calls.
func (r *Reader) SetDeadline(d time.Time) { r.deadline = d }

// Flush makes a blocked ReadInto or Wait return ringbuf.ErrFlushed (ReadInto
// after what is in the buffer): the final drain.
func (r *Reader) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eventfd < 0 {
		return fmt.Errorf("ring buffer: %w", os.ErrClosed)
	}
	one := [8]byte{1}
	if _, err := unix.Write(r.eventfd, one[:]); err != nil {
		return fmt.Errorf("flushing ring buffer: %w", err)
	}
	return nil
}

// ReadInto copies the next record into rec. It waits for one, or until the
// deadline set with SetDeadline passes (os.ErrDeadlineExceeded, after the
// records present at that time have been returned), or until Flush
// (ringbuf.ErrFlushed). Below the wakeup threshold the kernel does not
// wake the reader, so the caller keeps a short deadline to pick up a
// trickle of events promptly. It publishes the consumer position after
// every record: the slow path, kept for callers that want one record at a
// time; Drain is the fast path.
func (r *Reader) ReadInto(rec *ringbuf.Record) error {
	for {
		got, busy, err := r.readOne(rec)
		if got || err != nil {
			return err
		}
		if busy {
			runtime.Gosched()
			continue
		}
		if pe := r.pendingErr; pe != nil {
			r.pendingErr = nil
			return pe
		}
		if err := r.Wait(); errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
			r.pendingErr = err
		} else if err != nil {
			return err
		}
	}
}

// readOne copies the next committed record into rec, if there is one.
func (r *Reader) readOne(rec *ringbuf.Record) (got, busy bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		return false, false, fmt.Errorf("ring buffer: %w", os.ErrClosed)
	}
	cons := atomic.LoadUint64(r.consPos)
	prod := atomic.LoadUint64(r.prodPos)
	if err := r.ensure(min(prod, uint64(len(r.data)))); err != nil {
		return false, false, err
	}
	for cons < prod {
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if hdr&ringBusyBit != 0 {
			return false, true, nil
		}
		length := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
		start := (cons + ringHeaderSize) & r.mask
		cons += ringHeaderSize + (length+7)&^7
		atomic.StoreUint64(r.consPos, cons)
		if hdr&ringDiscardBit == 0 {
			rec.RawSample = append(rec.RawSample[:0], r.record(start, length)...)
			rec.Remaining = int(prod - cons)
			return true, false, nil
		}
	}
	return false, false, nil
}
