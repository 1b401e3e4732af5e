package loader

// Totals are the kernel's exact counts (the counters map, summed over the
// CPUs), whatever happened to the event stream. The loader decodes the map
// into it once; everything else reads the fields.
type Totals struct {
	Calls      uint64 // completed calls (entry and exit paired)
	Bytes      uint64 // sum of positive return values
	Errors     uint64 // ret < 0
	Short      uint64 // 0 < ret < count
	EOF        uint64 // ret == 0
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

// counterSums is the counters map summed over the CPUs, one sum per enum
// counter.
type counterSums [SfwatchCounterCOUNTER_MAX]uint64

// totals decodes the map; COUNTER_SAMPLE_TICK is the sampler's state, not
// a total.
func (c *counterSums) totals() Totals {
	return Totals{
		Calls:      c[SfwatchCounterCOUNTER_CALLS],
		Bytes:      c[SfwatchCounterCOUNTER_BYTES],
		Errors:     c[SfwatchCounterCOUNTER_ERRORS],
		Short:      c[SfwatchCounterCOUNTER_SHORT],
		EOF:        c[SfwatchCounterCOUNTER_EOF],
		OffsetNull: c[SfwatchCounterCOUNTER_OFFSET_NULL],
		OffsetPtr:  c[SfwatchCounterCOUNTER_OFFSET_PTR],
		Lost:       c[SfwatchCounterCOUNTER_LOST],
		SampledOut: c[SfwatchCounterCOUNTER_SAMPLED_OUT],
		Unpaired:   c[SfwatchCounterCOUNTER_UNPAIRED],
		Restarts:   c[SfwatchCounterCOUNTER_RESTARTS],
		Escaped:    c[SfwatchCounterCOUNTER_ESCAPED],
		DurationNs: c[SfwatchCounterCOUNTER_DURATION_NS],
	}
}
