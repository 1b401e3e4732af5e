package counters

import "github.com/sfwatch/sfwatch/internal/loader"

// Totals are the kernel's exact counts (the counters map, summed over the
// CPUs), whatever happened to the event stream. Reader decodes the map
// into it once; everything else reads the fields.
type Totals struct {
	Calls      uint64 // completed calls (entry and exit paired)
	Bytes      uint64 // sum of positive return values
	Errors     uint64 // ret < 0
	Short      uint64 // 0 < ret < count
	EOF        uint64 // ret == 0 for a count > 0: the end of the input
	Empty      uint64 // ret == 0 for a count of 0: asked for nothing
	OffsetNull uint64 // offset argument was NULL
	OffsetPtr  uint64 // offset argument was a pointer
	Lost       uint64 // events dropped because the ring buffer was full
	SampledOut uint64 // events not emitted because of sampling
	Unpaired   uint64 // exits without an entry: calls that began before attach
	// Restarts are calls a signal interrupted before any byte moved and
	// the kernel ran again (SA_RESTART): the run that completes is the
	// call. Not calls, not errors. An interruption that returned EINTR to
	// the program is a call, and an error.
	Restarts uint64
	// Escaped counts the run's tasks that moved out of its group; their
	// calls are still counted (the BPF side follows them).
	Escaped    uint64
	DurationNs uint64 // sum of the calls' durations: the latency histogram's sum
}

// OK is the calls that were neither short, an end of file, empty nor an
// error: the kernel counts no "ok", so it is the difference. Its terms are
// read one after another while calls go on (calls bumped first, the class
// second), so it can be off by the calls in flight: clamped at zero, never
// a wrapped uint64; exact once calls stop.
func (t *Totals) OK() uint64 {
	if other := t.Short + t.EOF + t.Empty + t.Errors; t.Calls > other {
		return t.Calls - other
	}
	return 0
}

// counterSums is the counters map summed over the CPUs, one sum per enum
// counter.
type counterSums [loader.SfwatchCounterCOUNTER_MAX]uint64

// TotalsOf decodes a row of the counters' enum (the daemon's rows start
// with one).
func TotalsOf(row *[loader.SfwatchCounterCOUNTER_MAX]uint64) Totals {
	return (*counterSums)(row).totals()
}

// totals decodes the map; COUNTER_SAMPLE_TICK is the sampler's state, not
// a total.
func (c *counterSums) totals() Totals {
	return Totals{
		Calls:      c[loader.SfwatchCounterCOUNTER_CALLS],
		Bytes:      c[loader.SfwatchCounterCOUNTER_BYTES],
		Errors:     c[loader.SfwatchCounterCOUNTER_ERRORS],
		Short:      c[loader.SfwatchCounterCOUNTER_SHORT],
		EOF:        c[loader.SfwatchCounterCOUNTER_EOF],
		Empty:      c[loader.SfwatchCounterCOUNTER_EMPTY],
		OffsetNull: c[loader.SfwatchCounterCOUNTER_OFFSET_NULL],
		OffsetPtr:  c[loader.SfwatchCounterCOUNTER_OFFSET_PTR],
		Lost:       c[loader.SfwatchCounterCOUNTER_LOST],
		SampledOut: c[loader.SfwatchCounterCOUNTER_SAMPLED_OUT],
		Unpaired:   c[loader.SfwatchCounterCOUNTER_UNPAIRED],
		Restarts:   c[loader.SfwatchCounterCOUNTER_RESTARTS],
		Escaped:    c[loader.SfwatchCounterCOUNTER_ESCAPED],
		DurationNs: c[loader.SfwatchCounterCOUNTER_DURATION_NS],
	}
}
