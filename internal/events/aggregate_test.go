package events

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/counters"
)

func TestLatencyBuckets(t *testing.T) {
	values := []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 20, 1<<20 + 1, 1<<40 - 1, 1 << 62, 1 << 63, math.MaxUint64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Uint64()>>r.IntN(64))
	}
	for _, v := range values {
		i := latencyBucket(v)
		if i < 0 || i >= latencyBuckets {
			t.Fatalf("latencyBucket(%d) = %d, out of [0, %d)", v, i, latencyBuckets)
		}
		mid := latencyMidpoint(i)
		if latencyBucket(mid) != i {
			t.Errorf("midpoint %d of bucket %d (of %d) falls in bucket %d", mid, i, v, latencyBucket(mid))
		}
		if diff := math.Abs(float64(mid) - float64(v)); diff > float64(v)/32 {
			t.Errorf("value %d read back as %d: %.2f%% off", v, mid, 100*diff/float64(v))
		}
	}
	for v := uint64(0); v < 4096; v++ {
		if v > 0 && latencyBucket(v) < latencyBucket(v-1) {
			t.Fatalf("buckets not monotonic at %d", v)
		}
	}
}

func TestQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, dist := range []struct {
		name string
		draw func() uint64
	}{
		{"constant", func() uint64 { return 1234 }},
		{"uniform 1ns..1ms", func() uint64 { return 1 + r.Uint64N(1_000_000) }},
		{"exponential, mean 20µs", func() uint64 { return uint64(r.ExpFloat64() * 20_000) }},
		{"bimodal 2µs and 5ms", func() uint64 {
			if r.IntN(100) < 97 {
				return 2000 + r.Uint64N(100)
			}
			return 5_000_000 + r.Uint64N(1000)
		}},
		{"tiny", func() uint64 { return r.Uint64N(16) }},
	} {
		t.Run(dist.name, func(t *testing.T) {
			var a Aggregator
			var all []uint64
			for range 100_000 {
				e := call(4, 3, 10, 10)
				e.DurationNs = dist.draw()
				all = append(all, e.DurationNs)
				a.Add(&e, Validate(&e))
			}
			slices.Sort(all)
			s := a.Summary(counters.Snapshot{})
			for _, q := range []struct {
				name string
				p    float64
				got  time.Duration
			}{{"p50", 0.50, s.P50}, {"p99", 0.99, s.P99}} {
				exact := all[int(math.Ceil(q.p*float64(len(all))))-1]
				if diff := math.Abs(float64(q.got) - float64(exact)); diff > float64(exact)/32 {
					t.Errorf("%s = %v, exact %v: %.2f%% off", q.name, q.got, time.Duration(exact), 100*diff/float64(exact))
				}
			}
			if want := time.Duration(all[len(all)-1]); s.Max != want {
				t.Errorf("max = %v, want exactly %v", s.Max, want)
			}
			if s.P99 > s.Max || s.P50 > s.P99 {
				t.Errorf("p50 %v, p99 %v, max %v out of order", s.P50, s.P99, s.Max)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	var a Aggregator
	if s := a.Summary(counters.Snapshot{}); s.P50 != 0 || s.P99 != 0 || s.Max != 0 || s.Events != 0 || len(s.FirstViolations) != 0 {
		t.Errorf("empty aggregator: %+v", s)
	}

	var violating []Checked
	for i := range 20 {
		ok := call(4, 3, 4096, 4096)
		a.Add(&ok, Validate(&ok))
		bad := call(4, 3, 10, int64(100+i)) // ret_over_count
		if i%2 == 1 {
			bad = withOffset(bad, 0, 0) // and offset_not_advanced
		}
		violating = append(violating, Checked{bad, Validate(&bad)})
		a.Add(&bad, Validate(&bad))
	}
	unknown := withUnreadableOffset(call(4, 3, 4096, -14), 0)
	a.Add(&unknown, Validate(&unknown))
	short := call(4, 3, 4096, 1)
	a.Add(&short, Validate(&short))
	eof := call(4, 3, 4096, 0)
	a.Add(&eof, Validate(&eof))
	empty := call(4, 3, 0, 0) // asked for nothing: the kernel counts it apart
	a.Add(&empty, Validate(&empty))

	totals := counters.Snapshot{
		Totals: counters.Totals{Calls: 100, Bytes: 1 << 30, Errors: 3, Short: 1, EOF: 1, Empty: 1, OffsetNull: 90, OffsetPtr: 10,
			Lost: 57, SampledOut: 0, Unpaired: 2},
		ErrnoCounts: map[syscall.Errno]uint64{syscall.EBADF: 2, syscall.EFAULT: 1, 1234: 4, syscall.EIO: 0},
	}
	s := a.Summary(totals)

	if s.Calls != 100 || s.Bytes != 1<<30 || s.Errors != 3 || s.Short != 1 || s.EOF != 1 || s.Empty != 1 ||
		s.OffsetNull != 90 || s.OffsetPtr != 10 || s.Lost != 57 || s.SampledOut != 0 || s.Unpaired != 2 {
		t.Errorf("kernel totals not copied: %+v", s)
	}
	if s.Events != 44 || s.Violations != 20 || s.OffsetUnknown != 1 || s.EventsByClass["empty"] != 1 {
		t.Errorf("events %d, violations %d, offset unknown %d, empty events %d; want 44, 20, 1, 1", s.Events, s.Violations, s.OffsetUnknown, s.EventsByClass["empty"])
	}
	if want := map[string]uint64{"ret_over_count": 20, "offset_not_advanced": 10}; !maps.Equal(s.ViolationsByRule, want) {
		t.Errorf("ViolationsByRule = %v, want %v", s.ViolationsByRule, want)
	}
	if want := map[string]uint64{"EBADF": 2, "EFAULT": 1, "errno 1234": 4}; !maps.Equal(s.ErrorsByErrno, want) {
		t.Errorf("ErrorsByErrno = %v, want %v", s.ErrorsByErrno, want)
	}
	if want := map[string]uint64{"ok": 40, "short": 1, "eof": 1, "error": 1, "empty": 1}; !maps.Equal(s.EventsByClass, want) {
		t.Errorf("EventsByClass = %v, want %v", s.EventsByClass, want)
	}
	if !slices.Equal(s.FirstViolations, violating[:MaxFirstViolations]) {
		t.Errorf("FirstViolations = %+v, want the first %d", s.FirstViolations, MaxFirstViolations)
	}
	if s.Complete() {
		t.Error("Complete() with 57 lost")
	}

	// The summary owns its copies: more events do not change it.
	more := call(4, 3, 1, 2)
	a.Add(&more, Validate(&more))
	s.FirstViolations[0].Ret = -1
	if s2 := a.Summary(totals); s2.FirstViolations[0] != violating[0] {
		t.Error("Summary shares FirstViolations with the aggregator")
	}
}

func TestComplete(t *testing.T) {
	for _, tc := range []struct {
		lost, sampled uint64
		want          bool
	}{{0, 0, true}, {1, 0, false}, {0, 1, false}, {5, 5, false}} {
		if got := (Summary{Totals: counters.Totals{Lost: tc.lost, SampledOut: tc.sampled, Unpaired: 3}}).Complete(); got != tc.want {
			t.Errorf("lost %d sampled out %d: Complete() = %v", tc.lost, tc.sampled, got)
		}
	}
}
