package events

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/sfwatch/sfwatch/internal/counters"
)

// sampleSummary is a run of 1003 calls of which 2 events were lost.
func sampleSummary() Summary {
	var a Aggregator
	for i := range 1000 {
		e := call(4, 3, 4096, 4096)
		e.DurationNs = uint64(1000 + 10*i)
		a.Add(&e, Validate(&e))
	}
	bad := withOffset(call(4, 3, 10, 4096), 0, 0)
	a.Add(&bad, Validate(&bad))
	return a.Summary(counters.Snapshot{
		Totals:      counters.Totals{Calls: 1003, Bytes: 4100096, Errors: 2, EOF: 1, OffsetNull: 1000, OffsetPtr: 3, Lost: 2},
		ErrnoCounts: map[syscall.Errno]uint64{syscall.EBADF: 1, syscall.EINVAL: 1},
	})
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, sampleSummary()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"sendfile calls (exact, counted in the kernel):\n",
		"     1003  calls\n",
		"  4100096  bytes\n",
		"        2  errors\n",
		"        0  short\n",
		"        1  eof\n",
		"     1000  offset NULL\n",
		"        3  offset pointer\n",
		"     1001  delivered\n",
		"        2  lost (ring buffer full)\n",
		"        1  violations (among delivered events only)\n",
		"        1    offset_not_advanced\n",
		"        1    ret_over_count\n",
		"           latency p50 6.015µs, p99 11.007µs, max 123.456µs\n",
		"errors by errno:\n",
		"        1  EBADF (Bad file descriptor)\n",
		"        1  EINVAL (Invalid argument)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	for _, absent := range []string{"sampled out", "unpaired", "unreadable", "restarted", "skipped", "left the group"} {
		if strings.Contains(out, absent) {
			t.Errorf("table mentions %q, which is zero", absent)
		}
	}

	s := Summary{Totals: counters.Totals{SampledOut: 7, Unpaired: 1, Restarts: 9, Escaped: 6}, OffsetUnknown: 4,
		Skipped: 5, SkippedByProgram: map[string]uint64{"sys_enter_sendfile64": 3, "sys_exit_sendfile64": 2, "signal_deliver": 0}}
	b.Reset()
	if err := WriteTable(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"7  sampled out", "1  unpaired", "4  offset unreadable", "9  interrupted by a signal, restarted (not counted)", "0  violations (among delivered events only)",
		"5  program runs the kernel skipped (counts above are lower bounds)\n", "3    sys_enter_sendfile64\n", "2    sys_exit_sendfile64\n",
		"6  tasks that left the group (followed; their calls counted)\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "signal_deliver") {
		t.Errorf("table lists a program that was never skipped:\n%s", b.String())
	}
	if strings.Contains(b.String(), "errors by errno") {
		t.Errorf("table has an errno section without errors:\n%s", b.String())
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteTableError(t *testing.T) {
	err := WriteTable(failingWriter{}, sampleSummary())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteTable to a failing writer: %v", err)
	}
}

func TestAccountingLine(t *testing.T) {
	for _, tc := range []struct {
		s    Summary
		want string
	}{
		{Summary{Totals: counters.Totals{Calls: 1000000}, Events: 1000000},
			"sfwatch: 1000000 calls counted in the kernel, 1000000 events delivered, 0 lost"},
		{Summary{Totals: counters.Totals{Calls: 1000000, Lost: 10}, Events: 999990},
			"sfwatch: 1000000 calls counted in the kernel, 999990 events delivered, 10 lost"},
		{Summary{Totals: counters.Totals{Calls: 10000, SampledOut: 9900}, Events: 100},
			"sfwatch: 10000 calls counted in the kernel, 100 events delivered, 0 lost, 9900 sampled out"},
		{Summary{Totals: counters.Totals{Calls: 5, Unpaired: 1}, Events: 5},
			"sfwatch: 5 calls counted in the kernel, 5 events delivered, 0 lost, 1 unpaired (in flight when tracing began)"},
		{Summary{Totals: counters.Totals{Calls: 5}, Events: 3},
			"sfwatch: 5 calls counted in the kernel, 3 events delivered, 0 lost, 2 unaccounted for"},
		{Summary{Totals: counters.Totals{Calls: 5, Escaped: 2}, Events: 5},
			"sfwatch: 5 calls counted in the kernel, 5 events delivered, 0 lost, 2 left the group (followed)"},
		{Summary{Totals: counters.Totals{Calls: 5}, Events: 5, Skipped: 7, SkippedByProgram: map[string]uint64{"signal_deliver": 2, "sys_exit_sendfile64": 5, "sys_enter_sendfile64": 0}},
			"sfwatch: 5 calls counted in the kernel, 5 events delivered, 0 lost, 7 program runs skipped by the kernel (sys_exit_sendfile64 5; signal_deliver 2; calls may be missing; see 'sfwatch doctor')"},
	} {
		if got := AccountingLine(tc.s); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
