package events

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/loader"
)

func TestAppendText(t *testing.T) {
	tiny := call(1, 2, 0, 0) // a short line, to see strace's alignment
	tiny.Tid = 7
	setComm(&tiny, "a")
	wideTid := call(5, 7, 3584, 3584)
	wideTid.Tid = 4194304
	oddComm := call(5, 7, 3584, 3584)
	setComm(&oddComm, "a\nb\\c\x7f")
	slow := call(5, 7, 3584, 3584)
	slow.DurationNs = 1_500_000_999
	instant := call(5, 7, 3584, 3584)
	instant.DurationNs = 0
	const before = loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK

	const p = "[pid  1234<server>] "
	const wall = 1795893920_027356_789 - 1_000_000_000
	for _, tc := range []struct {
		name string
		e    Event
		o    TextOptions
		want string
	}{
		{"NULL offset", call(5, 7, 3584, 3584), TextOptions{}, p + al("sendfile(5, 7, NULL, 3584)") + "= 3584"},
		{"aligned at column 40", tiny, TextOptions{}, "[pid     7<a>] sendfile(1, 2, NULL, 0)     = 0"},
		{"-a 20", tiny, TextOptions{Column: 20}, "[pid     7<a>] sendfile(1, 2, NULL, 0) = 0"},
		{"-a 60", tiny, TextOptions{Column: 60}, "[pid     7<a>] sendfile(1, 2, NULL, 0)" + strings.Repeat(" ", 25) + "= 0"},
		{"strace -f", tiny, TextOptions{Prefix: PrefixPid}, "[pid     7] sendfile(1, 2, NULL, 0)     = 0"},
		{"strace -f -o FILE", tiny, TextOptions{Prefix: PrefixFile}, "7     sendfile(1, 2, NULL, 0)           = 0"},
		{"strace -f -o FILE, wide tid", wideTid, TextOptions{Prefix: PrefixFile}, "4194304 sendfile(5, 7, NULL, 3584)      = 3584"},
		{"strace", tiny, TextOptions{Prefix: PrefixNone}, "sendfile(1, 2, NULL, 0)                 = 0"},
		{"strace -t", tiny, TextOptions{Prefix: PrefixNone, Timestamps: Seconds, WallOffsetNs: wall, Location: time.UTC}, "19:25:20 sendfile(1, 2, NULL, 0)        = 0"},
		{"tid wider than 5", wideTid, TextOptions{}, "[pid 4194304<server>] sendfile(5, 7, NULL, 3584) = 3584"},
		{"comm escaped", oddComm, TextOptions{}, `[pid  1234<a\x0ab\x5cc\x7f>] sendfile(5, 7, NULL, 3584)  = 3584`},
		{"negative fd", call(-1, 7, 10, -9), TextOptions{}, p + al("sendfile(-1, 7, NULL, 10)") + "= -1 EBADF (Bad file descriptor)"},

		{"pointer, changed", withOffset(call(4, 3, 4096, 4096), 0, 4096), TextOptions{}, p + al("sendfile(4, 3, [0] => [4096], 4096)") + "= 4096"},
		{"pointer, short", withOffset(call(4, 3, 4096, 100), 9900, 10000), TextOptions{}, p + al("sendfile(4, 3, [9900] => [10000], 4096)") + "= 100"},
		{"pointer, eof", withOffset(call(4, 3, 4096, 0), 1048576, 1048576), TextOptions{}, p + al("sendfile(4, 3, [1048576], 4096)") + "= 0"},
		{"pointer, error", withOffset(call(4, 3, 4096, -11), 5, 5), TextOptions{}, p + al("sendfile(4, 3, [5], 4096)") + "= -1 EAGAIN (Resource temporarily unavailable)"},
		{"pointer, negative", withOffset(call(4, 3, 10, -22), -5, -5), TextOptions{}, p + al("sendfile(4, 3, [18446744073709551611], 10)") + "= -1 EINVAL (Invalid argument)"},
		{"pointer, unreadable", withUnreadableOffset(call(4, 3, 4096, -14), 0), TextOptions{}, p + al("sendfile(4, 3, 0x7ffc1234abcd, 4096)") + "= -1 EFAULT (Bad address)"},
		{"pointer, unreadable after", withUnreadableOffset(call(4, 3, 4096, 4096), before), TextOptions{}, p + al("sendfile(4, 3, [0] => 0x7ffc1234abcd, 4096)") + "= 4096"},

		{"EBADF", call(1, 3, 10, -9), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EBADF (Bad file descriptor)"},
		{"EINVAL", call(1, 3, 10, -22), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EINVAL (Invalid argument)"},
		{"ESPIPE", call(1, 3, 10, -29), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 ESPIPE (Illegal seek)"},
		{"EIO", call(1, 3, 10, -5), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EIO (Input/output error)"},
		{"ENOMEM", call(1, 3, 10, -12), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 ENOMEM (Cannot allocate memory)"},
		{"EOVERFLOW", call(1, 3, 10, -75), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EOVERFLOW (Value too large for defined data type)"},
		{"EPIPE", call(1, 3, 10, -32), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EPIPE (Broken pipe)"},
		{"ECONNRESET", call(1, 3, 10, -104), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 ECONNRESET (Connection reset by peer)"},
		{"EINTR", call(1, 3, 10, -4), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EINTR (Interrupted system call)"},
		{"EAGAIN", call(1, 3, 10, -11), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EAGAIN (Resource temporarily unavailable)"},
		{"ERESTARTSYS", call(1, 3, 10, -512), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= ? ERESTARTSYS (To be restarted if SA_RESTART is set)"},
		{"ERESTARTNOINTR", call(1, 3, 10, -513), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= ? ERESTARTNOINTR (To be restarted)"},
		{"ERESTARTNOHAND", call(1, 3, 10, -514), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= ? ERESTARTNOHAND (To be restarted if no handler)"},
		{"ERESTART_RESTARTBLOCK", call(1, 3, 10, -516), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= ? ERESTART_RESTARTBLOCK (Interrupted by signal)"},
		{"ENOTCONN", call(1, 3, 10, -107), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 ENOTCONN (Transport endpoint is not connected)  # VIOLATION unexpected_errno"},
		{"kernel-internal", call(1, 3, 10, -524), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 ENOTSUPP (Unknown error 524)  # VIOLATION unexpected_errno"},
		{"unnamed errno", call(1, 3, 10, -1234), TextOptions{}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 (errno 1234)  # VIOLATION unexpected_errno"},
		{"not an errno", withOffset(call(1, 3, 10, -4096), 0, 0), TextOptions{}, p + al("sendfile(1, 3, [0] => [0], 10)") + "= 18446744073709547520  # VIOLATION ret_out_of_range"},

		{"-T", call(5, 7, 3584, 3584), TextOptions{Durations: true}, p + al("sendfile(5, 7, NULL, 3584)") + "= 3584 <0.000123>"},
		{"-T truncates to µs", slow, TextOptions{Durations: true}, p + al("sendfile(5, 7, NULL, 3584)") + "= 3584 <1.500000>"},
		{"-T zero", instant, TextOptions{Durations: true}, p + al("sendfile(5, 7, NULL, 3584)") + "= 3584 <0.000000>"},
		{"-T error", call(1, 3, 10, -9), TextOptions{Durations: true}, p + al("sendfile(1, 3, NULL, 10)") + "= -1 EBADF (Bad file descriptor) <0.000123>"},

		// StartNs 1 s + offset = 1795893920.027356789: 2026-11-28 19:25:20 UTC.
		{"-t", call(5, 7, 3584, 3584), TextOptions{Timestamps: Seconds, WallOffsetNs: wall, Location: time.UTC}, p + al("19:25:20 sendfile(5, 7, NULL, 3584)") + "= 3584"},
		{"-tt", call(5, 7, 3584, 3584), TextOptions{Timestamps: Microseconds, WallOffsetNs: wall, Location: time.UTC}, p + al("19:25:20.027356 sendfile(5, 7, NULL, 3584)") + "= 3584"},
		{"-tt elsewhere", call(5, 7, 3584, 3584), TextOptions{Timestamps: Microseconds, WallOffsetNs: wall, Location: time.FixedZone("", 3600)}, p + al("20:25:20.027356 sendfile(5, 7, NULL, 3584)") + "= 3584"},
		{"-ttt -T", call(5, 7, 3584, 3584), TextOptions{Timestamps: EpochMicroseconds, WallOffsetNs: wall, Durations: true}, p + al("1795893920.027356 sendfile(5, 7, NULL, 3584)") + "= 3584 <0.000123>"},
		{"-tt, a whole second", call(1, 2, 9, 9), TextOptions{Timestamps: Microseconds, WallOffsetNs: wall - 27356789, Location: time.UTC}, p + al("19:25:20.000000 sendfile(1, 2, NULL, 9)") + "= 9"},

		{"violation", withOffset(call(4, 3, 10, 4096), 0, 0), TextOptions{}, p + al("sendfile(4, 3, [0] => [0], 10)") + "= 4096  # VIOLATION ret_over_count,offset_not_advanced"},
		{"violation after -T", call(4, 3, 10, 4096), TextOptions{Durations: true}, p + al("sendfile(4, 3, NULL, 10)") + "= 4096 <0.000123>  # VIOLATION ret_over_count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendText(nil, &tc.e, Validate(&tc.e), tc.o))
			if want := tc.want + "\n"; got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// al pads what precedes "= " on a line that starts with "[pid  1234<server>] "
// as strace -f pads it after "[pid  1234] ": to column 40 of that line.
func al(call string) string {
	const straceSpan = len("[pid  1234] ")
	return call + " " + strings.Repeat(" ", max(0, resultColumn-straceSpan-len(call)-1))
}

// The alignment counts from the start of the line, not of dst.
func TestAppendTextAppends(t *testing.T) {
	e := call(1, 2, 0, 0)
	e.Tid = 7
	setComm(&e, "a")
	got := string(AppendText([]byte("previous line\n"), &e, Validate(&e), TextOptions{}))
	if want := "previous line\n[pid     7<a>] sendfile(1, 2, NULL, 0)     = 0\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Go's TestLinuxSendfile matched strace's text with this regexp; sfwatch's
// NULL-offset lines must still match it.
func TestAppendTextMatchesGoRegexp(t *testing.T) {
	rx := regexp.MustCompile(`sendfile(64)?\(\d+,\s*\d+,\s*NULL,\s*\d+\)\s*=\s*\d+\s*\n`)
	short := call(1, 2, 9, 9)
	short.Tid = 1
	setComm(&short, "x")
	for _, e := range []Event{call(5, 7, 3584, 3584), short} {
		line := AppendText(nil, &e, Validate(&e), TextOptions{})
		if !rx.Match(line) {
			t.Errorf("%q does not match %v", line, rx)
		}
		if strings.Count(string(line), "\n") != 1 || line[len(line)-1] != '\n' {
			t.Errorf("%q is not one line ending in a newline", line)
		}
	}
}
