package events

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/sfwatch/sfwatch/internal/counters"
)

// MaxFirstViolations is how many violating events a Summary keeps.
const MaxFirstViolations = 5

// Aggregator accumulates what only the events can tell (violations,
// latency quantiles) without allocating per event. The zero value is ready
// to use. Add and Summary are for one goroutine; Delivered and
// ViolationsByRule may be called from any other while Add runs (a metrics
// scrape), so the counts they read are atomics.
type Aggregator struct {
	delivered     atomic.Uint64
	byRule        [32]atomic.Uint64 // by bit of Violations
	violating     uint64
	offsetUnknown uint64
	byClass       [numClasses]uint64
	latency       latencyHistogram
	first         [MaxFirstViolations]Checked
	nfirst        int
}

// Add counts one delivered event and its verdict.
func (a *Aggregator) Add(e *Event, v Verdict) {
	a.delivered.Add(1)
	if v.Class < numClasses {
		a.byClass[v.Class]++
	}
	if v.OffsetUnknown {
		a.offsetUnknown++
	}
	if v.Violations != 0 {
		a.violating++
		for set := uint32(v.Violations); set != 0; set &= set - 1 {
			a.byRule[bits.TrailingZeros32(set)].Add(1)
		}
		if a.nfirst < len(a.first) {
			a.first[a.nfirst] = Checked{*e, v}
			a.nfirst++
		}
	}
	a.latency.add(e.DurationNs)
}

// Delivered is how many events Add has counted.
func (a *Aggregator) Delivered() uint64 { return a.delivered.Load() }

// ViolationsByRule maps each rule that delivered events broke to how many
// broke it. It allocates.
func (a *Aggregator) ViolationsByRule() map[string]uint64 {
	m := make(map[string]uint64)
	for bit := range a.byRule {
		if n := a.byRule[bit].Load(); n != 0 {
			m[ruleName(bit)] = n
		}
	}
	return m
}

// Summary is the outcome of a run: the kernel's exact totals and the facts
// drawn from the delivered events.
type Summary struct {
	// Exact, counted in the kernel.
	counters.Totals
	ErrorsByErrno map[string]uint64 // errno name -> failed calls; codes below -4095 are in Errors only
	// Skipped is how many times the kernel did not run a program of
	// sfwatch's (SkippedByProgram, by program). Not zero, the totals above
	// are lower bounds: a skipped entry or exit is a call counted nowhere.
	Skipped          uint64
	SkippedByProgram map[string]uint64
	// MissedExits: thread exits the kernel skipped telling sfwatch; they
	// cost no call (a stale bookkeeping entry each), only said.
	MissedExits uint64

	// Per-event: exact only when Complete.
	Events           uint64            // delivered to user space
	EventsByClass    map[string]uint64 // class name -> delivered events; only non-zero classes
	Violations       uint64            // events that broke at least one rule
	ViolationsByRule map[string]uint64 // rule name -> events; only rules that fired
	OffsetUnknown    uint64            // pointer offsets that could not be read
	P50, P99, Max    time.Duration     // call durations; Max is exact, quantiles within ~3%
	FirstViolations  []Checked         // the first MaxFirstViolations violating events
}

// Complete reports whether every call was delivered as an event, so that
// the per-event facts (violations, latency) are exact rather than a sample.
func (s Summary) Complete() bool { return s.Lost == 0 && s.SampledOut == 0 && s.Skipped == 0 }

// KernelSummary is the part of a Summary the kernel counts (exact, and
// safe to read while events are added): the totals, errnos and skips, with
// the events delivered so far.
func (a *Aggregator) KernelSummary(k counters.Snapshot) Summary {
	s := Summary{
		Totals:           k.Totals,
		MissedExits:      k.MissedExits,
		ErrorsByErrno:    make(map[string]uint64, len(k.ErrnoCounts)),
		SkippedByProgram: make(map[string]uint64, len(k.Skipped)),
		Events:           a.Delivered(),
		ViolationsByRule: a.ViolationsByRule(),
	}
	for errno, n := range k.ErrnoCounts {
		if n != 0 {
			s.ErrorsByErrno[ErrnoName(errno)] += n
		}
	}
	for prog, n := range k.Skipped {
		s.SkippedByProgram[prog] = n
		s.Skipped += n
	}
	return s
}

// Summary merges the kernel's totals with the per-event facts. Not while
// events are added: once the consumer is done.
func (a *Aggregator) Summary(k counters.Snapshot) Summary {
	s := a.KernelSummary(k)
	s.EventsByClass = make(map[string]uint64, numClasses)
	s.Violations = a.violating
	s.OffsetUnknown = a.offsetUnknown
	s.P50 = a.latency.quantile(0.50)
	s.P99 = a.latency.quantile(0.99)
	s.Max = durationNs(a.latency.max)
	s.FirstViolations = append([]Checked(nil), a.first[:a.nfirst]...)
	for c, n := range a.byClass {
		if n != 0 {
			s.EventsByClass[Class(c).String()] = n
		}
	}
	return s
}

// Latency histogram, log-linear: values below 16 ns have a bucket each;
// above, every power of two [2^k, 2^(k+1)) is cut into 16 equal buckets. A
// bucket is at most 1/16 of its lower bound wide, and a quantile is read at
// its bucket's midpoint: within 1/32 (~3%) of the true value. 976 counters
// cover every uint64 without a map or an allocation.
const (
	subBucketBits  = 4
	subBuckets     = 1 << subBucketBits
	latencyBuckets = (64 - subBucketBits + 1) * subBuckets
)

type latencyHistogram struct {
	counts [latencyBuckets]uint64
	n      uint64
	max    uint64 // exact
}

func (h *latencyHistogram) add(ns uint64) {
	h.counts[latencyBucket(ns)]++
	h.n++
	h.max = max(h.max, ns)
}

func latencyBucket(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	k := bits.Len64(v) - 1 // 2^k <= v < 2^(k+1), k >= subBucketBits
	sub := int(v>>(k-subBucketBits)) & (subBuckets - 1)
	return (k-subBucketBits+1)*subBuckets + sub
}

// latencyMidpoint is the middle value of bucket i.
func latencyMidpoint(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	k := i/subBuckets + subBucketBits - 1
	width := uint64(1) << (k - subBucketBits)
	low := uint64(1)<<k + uint64(i%subBuckets)*width
	return low + (width-1)/2
}

// quantile returns the duration below or at which a fraction q of the calls
// fall, never more than the exact maximum; 0 with no data.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return durationNs(min(latencyMidpoint(i), h.max))
		}
	}
	return durationNs(h.max)
}

// durationNs converts without overflowing: a duration of more than 292
// years is a kernel clock bug, shown as the largest Duration.
func durationNs(ns uint64) time.Duration {
	return time.Duration(min(ns, math.MaxInt64))
}
