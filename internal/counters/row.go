package counters

import (
	"fmt"
	"syscall"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// FromRow decodes a run's totals as the daemon counts them (one of its
// rows, loader.RowSize slots) into the Snapshot a run of its own would
// give: the same counters, errnos and latency buckets (the row's last
// bucket holds every longer call). skipped is the daemon's programs' skips
// while the run was on; the Snapshot has the keys a run of its own has,
// with 0 for the programs the daemon does not have (it follows no task
// out of its group: a run's child cannot leave it).
func FromRow(row []uint64, skipped map[string]uint64) (Snapshot, error) {
	var s Snapshot
	if len(row) != loader.RowSize {
		return s, fmt.Errorf("a row of %d slots, want %d", len(row), loader.RowSize)
	}
	s.Totals = TotalsOf((*[loader.SfwatchCounterCOUNTER_MAX]uint64)(row[:loader.SfwatchCounterCOUNTER_MAX]))
	copy(s.LatencyLog2[:], row[loader.RowLatency:loader.RowLatency+loader.RowLatencyBuckets])
	s.ErrnoCounts = make(map[syscall.Errno]uint64)
	// Slot 0 holds errnos past the table, which Linux does not have: in
	// Errors only, as a return below -4095 is in a run of its own.
	for e := 1; e < loader.RowErrnos; e++ {
		if n := row[loader.RowErrno+e]; n != 0 {
			s.ErrnoCounts[syscall.Errno(e)] = n
		}
	}
	s.Skipped = make(map[string]uint64)
	for _, p := range loader.Programs() {
		if p != loader.ExitProgram {
			s.Skipped[p] = skipped[p]
		}
	}
	return s, nil
}
