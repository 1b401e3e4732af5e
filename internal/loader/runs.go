package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// A client run's row and ring can be parked when the run ends and reused
// by the next run of the same client uid: setting a ring (an update of the
// array of maps run_rings) waits for an RCU grace period, 8 to 15 ms here,
// which a parked row's next run does not pay.

// ParkRow zeroes row's totals and keeps it out of the free rows, its ring
// still set: the group it counted is forgotten (Forget) and empty. ReuseRow
// gives it to another group; FreeRow gives it back.
func (d *Daemon) ParkRow(row uint32) error {
	if err := d.zeroRow(row); err != nil {
		return fmt.Errorf("parking row %d: %w", row, err)
	}
	return nil
}

// ReuseRow counts the calls of group id in the row (parked, or just
// taken) from now on: the id is written before the row is published in
// group_rows, as row_of does, so a row is named before anything is
// counted in it.
func (d *Daemon) ReuseRow(row uint32, id uint64, sampleEvery uint32) error {
	if row == 0 || int(row) > d.maxGroups {
		return fmt.Errorf("reusing row %d: want 1 to %d", row, d.maxGroups)
	}
	if sampleEvery == 0 {
		sampleEvery = 1
	}
	base := int64(row) * int64(RowSize) * 8
	var b [8]byte
	for _, w := range []struct {
		slot  int
		value uint64
	}{{RowSampleEvery, uint64(sampleEvery)}, {RowID, id}} {
		binary.NativeEndian.PutUint64(b[:], w.value)
		if _, err := d.rows.WriteAt(b[:], base+int64(w.slot)*8); err != nil {
			return fmt.Errorf("reusing row %d for group %d: %w", row, id, err)
		}
	}
	if err := d.objs.GroupRows.Update(id, row, ebpf.UpdateNoExist); err != nil {
		return errors.Join(fmt.Errorf("reusing row %d for group %d: %w", row, id, err), d.ParkRow(row))
	}
	return nil
}

// SkipRing makes everything written to ring so far read: its next reader
// starts at what comes next. Nothing may write to it meanwhile (a parked
// row's ring). The previous reader, if it still maps the ring, can move
// the position too: a parked ring is reused only for the same client uid.
func SkipRing(ring *ebpf.Map) error {
	page := os.Getpagesize()
	cons, err := unix.Mmap(ring.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping a ring's consumer page: %w", err)
	}
	defer unix.Munmap(cons)
	prod, err := unix.Mmap(ring.FD(), int64(page), page, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping a ring's producer page: %w", err)
	}
	defer unix.Munmap(prod)
	p := atomic.LoadUint64((*uint64)(unsafe.Pointer(&prod[0])))
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&cons[0])), p)
	return nil
}

// TakeRow takes a free row for a client run, named by no group yet: its
// calls start with ReuseRow. ErrNoFreeRow when every row is taken.
func (d *Daemon) TakeRow() (uint32, error) {
	var row uint32
	if err := d.objs.FreeRows.LookupAndDelete(nil, &row); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = ErrNoFreeRow
		}
		return 0, fmt.Errorf("taking a row for a run: %w", err)
	}
	return row, nil
}
