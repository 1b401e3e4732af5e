package events

import (
	"slices"
	"testing"

	"github.com/sfwatch/sfwatch/internal/loader"
)

func TestValidate(t *testing.T) {
	const before = loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK
	const after = loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK
	for _, tc := range []struct {
		name          string
		e             Event
		want          Violations
		offsetUnknown bool
	}{
		// ret_over_count
		{"full transfer", call(4, 3, 4096, 4096), 0, false},
		{"short transfer is legal", call(4, 3, 4096, 1), 0, false},
		{"ret over count", call(4, 3, 4096, 4097), RetOverCount, false},
		{"eof with count 0", call(4, 3, 0, 0), 0, false},
		{"ret over count 0", call(4, 3, 0, 1), RetOverCount, false},

		// ret_over_max_rw
		{"ret at MAX_RW_COUNT", call(4, 3, 1<<40, maxRWCount), 0, false},
		{"ret over MAX_RW_COUNT", call(4, 3, 1<<40, maxRWCount+1), RetOverMaxRW, false},
		{"ret over both", call(4, 3, 4096, maxRWCount+1), RetOverCount | RetOverMaxRW, false},

		// offset_not_advanced
		{"offset advanced", withOffset(call(4, 3, 4096, 4096), 100, 4196), 0, false},
		{"offset advanced short", withOffset(call(4, 3, 4096, 10), 100, 110), 0, false},
		{"offset not advanced", withOffset(call(4, 3, 4096, 4096), 100, 100), OffsetNotAdvanced, false},
		{"offset advanced too far", withOffset(call(4, 3, 4096, 4096), 0, 8192), OffsetNotAdvanced, false},
		{"offset advanced too far and ret over count", withOffset(call(4, 3, 10, 4096), 0, 1), RetOverCount | OffsetNotAdvanced, false},

		// offset_moved_on_error
		{"eof, offset unchanged", withOffset(call(4, 3, 4096, 0), 1<<20, 1<<20), 0, false},
		{"eof, offset moved", withOffset(call(4, 3, 4096, 0), 1<<20, 1<<20+1), OffsetMovedOnError, false},
		{"error, offset unchanged", withOffset(call(4, 3, 4096, -11), 5, 5), 0, false},
		{"error, offset moved", withOffset(call(4, 3, 4096, -11), 5, 0), OffsetMovedOnError, false},
		{"EFAULT, offset moved: no claim", withOffset(call(4, 3, 4096, -14), 0, 4096), 0, false},
		{"restart, offset moved", withOffset(call(4, 3, 4096, -512), 0, 4096), OffsetMovedOnError, false},

		// unknown offsets never violate
		{"unreadable before", withUnreadableOffset(call(4, 3, 4096, 4096), after), 0, true},
		{"unreadable after", withUnreadableOffset(call(4, 3, 4096, 4096), before), 0, true},
		{"unreadable both, error", withUnreadableOffset(call(4, 3, 4096, -22), 0), 0, true},
		{"unreadable, EFAULT", withUnreadableOffset(call(4, 3, 4096, -14), 0), 0, true},
		{"unreadable, other rules still apply", withUnreadableOffset(call(4, 3, 10, 4096), 0), RetOverCount, true},
		{"NULL offset is never unknown", call(4, 3, 4096, 4096), 0, false},

		// unexpected_errno
		{"EAGAIN", call(4, 3, 4096, -11), 0, false},
		{"EBADF", call(4, 3, 4096, -9), 0, false},
		{"EFAULT", call(4, 3, 4096, -14), 0, false},
		{"EINVAL", call(4, 3, 4096, -22), 0, false},
		{"EIO", call(4, 3, 4096, -5), 0, false},
		{"ENOMEM", call(4, 3, 4096, -12), 0, false},
		{"ESPIPE", call(4, 3, 4096, -29), 0, false},
		{"EOVERFLOW", call(4, 3, 4096, -75), 0, false},
		{"EPIPE", call(4, 3, 4096, -32), 0, false},
		{"ECONNRESET", call(4, 3, 4096, -104), 0, false},
		{"EINTR", call(4, 3, 4096, -4), 0, false},
		{"ERESTARTSYS", call(4, 3, 4096, -512), 0, false},
		{"ERESTARTNOINTR", call(4, 3, 4096, -513), 0, false},
		{"ERESTARTNOHAND", call(4, 3, 4096, -514), 0, false},
		{"ERESTART_RESTARTBLOCK", call(4, 3, 4096, -516), 0, false},
		{"EPERM", call(4, 3, 4096, -1), UnexpectedErrno, false},
		{"ENOTCONN", call(4, 3, 4096, -107), UnexpectedErrno, false},
		{"ENOIOCTLCMD", call(4, 3, 4096, -515), UnexpectedErrno, false},
		{"unnamed errno", call(4, 3, 4096, -4095), UnexpectedErrno, false},

		// ret_out_of_range
		{"ret -4096", call(4, 3, 4096, -4096), RetOutOfRange, false},
		{"ret -2^40, offset moved", withOffset(call(4, 3, 4096, -1<<40), 0, 1), RetOutOfRange | OffsetMovedOnError, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Validate(&tc.e)
			if v.Violations != tc.want {
				t.Errorf("violations %v, want %v", v.Violations.Names(), tc.want.Names())
			}
			if v.OffsetUnknown != tc.offsetUnknown {
				t.Errorf("OffsetUnknown = %v, want %v", v.OffsetUnknown, tc.offsetUnknown)
			}
		})
	}
}

func TestViolationNames(t *testing.T) {
	all := RetOverCount | RetOverMaxRW | OffsetNotAdvanced | OffsetMovedOnError | UnexpectedErrno | RetOutOfRange
	want := []string{"ret_over_count", "ret_over_max_rw", "offset_not_advanced", "offset_moved_on_error", "unexpected_errno", "ret_out_of_range"}
	if got := all.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if got := string(all.AppendNames([]byte("x:"), ",")); got != "x:ret_over_count,ret_over_max_rw,offset_not_advanced,offset_moved_on_error,unexpected_errno,ret_out_of_range" {
		t.Errorf("AppendNames = %q", got)
	}
	if got := Violations(0).Names(); len(got) != 0 {
		t.Errorf("no violations: Names() = %q", got)
	}
	if got := string(Violations(0).AppendNames(nil, ",")); got != "" {
		t.Errorf("no violations: AppendNames = %q", got)
	}
	if got := (OffsetNotAdvanced | 1<<31).Names(); !slices.Equal(got, []string{"offset_not_advanced", "rule_bit_31"}) {
		t.Errorf("unknown bit: Names() = %q", got)
	}
}
