package events

import (
	"strconv"
	"time"

	"github.com/sfwatch/sfwatch/internal/loader"
	"golang.org/x/sys/unix"
)

// TextOptions changes what AppendText adds around strace's call text.
type TextOptions struct {
	// Durations appends the time spent in the call, as strace -T does.
	Durations bool
	// Timestamps puts the call's start time before it, as strace -t,
	// -tt or -ttt does.
	Timestamps Timestamps
	// WallOffsetNs turns an event's StartNs (CLOCK_MONOTONIC, the BPF
	// clock) into Unix time: see WallOffset.
	WallOffsetNs int64
	// Location is the time zone of -t and -tt; nil means time.Local.
	Location *time.Location
	// Prefix is the thread prefix's form.
	Prefix Prefix
	// Column is strace's -a: the column at which "= " starts when the call
	// is short enough; 0 means strace's default, 40.
	Column int
}

// Prefix is the form of the thread prefix, after strace's.
type Prefix uint8

const (
	// PrefixComm, "[pid  1234<comm>] ", is strace -f -Y's; the "<comm>"
	// does not count towards the column, so that the line is strace -f's
	// with the command name added, spaces included.
	PrefixComm Prefix = iota
	PrefixPid         // "[pid  1234] ": strace -f's
	PrefixFile        // "1234  ": strace -f -o FILE's (%-5d and a space)
	PrefixNone        // none: strace without -f, or strace -ff -o FILE's per-thread files
)

// Timestamps is strace's -t family.
type Timestamps int

const (
	NoTimestamps      Timestamps = iota
	Seconds                      // -t: 15:04:05, local time
	Microseconds                 // -tt: 15:04:05.000000
	EpochMicroseconds            // -ttt: 1795893921.027356, seconds since the epoch
)

// WallOffset is what to add to a CLOCK_MONOTONIC time in ns to get Unix
// time in ns, now. Taken once per run: the two clocks drift apart only by
// what NTP slews, far below a -tt microsecond over a run.
func WallOffset() int64 {
	var mono unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	return time.Now().UnixNano() - mono.Nano()
}

// resultColumn is where strace aligns "= " by default (its -a option).
// strace pads the line with spaces from its own first column, its prefix
// and timestamp included: strace 6.1 prints
// "[pid 17292] sendfile(6, 5, NULL, 0)     = 0" and, with -o FILE,
// "17311 sendfile(4, 3, NULL, 10)          = 10", "= " at column 40 in both.
const resultColumn = 40

// ViolationMarker starts the note AppendText adds to a line that broke a
// rule, so `grep VIOLATION` finds them all.
const ViolationMarker = "  # VIOLATION "

// AppendText appends one line ending in '\n', byte for byte what
// `strace -f -Y` (--decode-pids=comm) prints for the call, with -T if
// o.Durations and -t, -tt or -ttt as o.Timestamps says:
//
//	[pid    42<a>] sendfile(1, 2, NULL, 9)  = 9
//	[pid  1234<server>] sendfile(4, 3, [0] => [4096], 4096) = 4096 <0.000012>
//	[pid  1234<server>] 19:25:19.907477 sendfile(4, 3, NULL, 100) = 100
//	[pid  1234<server>] sendfile(4, 3, NULL, 10) = 4096  # VIOLATION ret_over_count
//
// The pid is the thread id, as strace -f shows it; "= " is aligned at
// column 40 when the call is short enough, counted as strace -f counts it,
// that is without the "<comm>" (see PrefixComm). A call that
// broke a rule gets ViolationMarker and the rules' names after strace's
// text, so the line still starts with exactly what strace would print.
func AppendText(dst []byte, e *Event, v Verdict, o TextOptions) []byte {
	start := len(dst)
	dst, uncounted := appendTextPrefix(dst, e, o.Prefix)
	return appendTextCall(dst, start+uncounted, e, v, o)
}

// Text renders lines as AppendText does, faster for a stream: it keeps
// the thread prefixes ("[pid  1234<server>] ") it has written, a third of
// the cost of a line, for the next calls of the same thread. The zero
// value is ready to use; it is not safe for concurrent use.
type Text struct {
	Options  TextOptions
	prefixes [64]textPrefix // direct-mapped by tid: bounded, no allocation
}

// textPrefix is one thread's prefix, valid while its comm is unchanged.
type textPrefix struct {
	tid       uint32
	comm      [16]byte
	form      Prefix
	n         int      // 0: empty
	uncounted int      // what of b does not count towards the column
	b         [96]byte // "[pid " + 10 digits + "<" + 15 bytes escaped to 4 each + ">] "
}

// Append appends e's line to dst, as AppendText(dst, e, v, t.Options).
func (t *Text) Append(dst []byte, e *Event, v Verdict) []byte {
	start := len(dst)
	p := &t.prefixes[e.Tid%uint32(len(t.prefixes))]
	form := t.Options.Prefix
	if p.n == 0 || p.tid != e.Tid || p.comm != e.SfwatchEvent.Comm || p.form != form {
		b, uncounted := appendTextPrefix(p.b[:0], e, form)
		if len(b) > len(p.b) { // cannot happen; never cache a reallocated one
			return appendTextCall(append(dst, b...), start+uncounted, e, v, t.Options)
		}
		p.tid, p.comm, p.form, p.n, p.uncounted = e.Tid, e.SfwatchEvent.Comm, form, len(b), uncounted
	}
	return appendTextCall(append(dst, p.b[:p.n]...), start+p.uncounted, e, v, t.Options)
}

// appendTextPrefix writes the thread prefix in form, and says how many of
// its bytes do not count towards the column: the "<comm>" of PrefixComm.
func appendTextPrefix(dst []byte, e *Event, form Prefix) ([]byte, int) {
	switch form {
	case PrefixNone:
		return dst, 0
	case PrefixFile:
		n := decimalWidth(uint64(e.Tid))
		dst = appendUint(dst, uint64(e.Tid))
		for ; n < 5; n++ {
			dst = append(dst, ' ')
		}
		return append(dst, ' '), 0
	}
	dst = append(dst, "[pid "...)
	dst = appendUintPadded(dst, uint64(e.Tid), 5, ' ')
	if form == PrefixPid {
		return append(dst, "] "...), 0
	}
	before := len(dst)
	dst = append(dst, '<')
	dst = appendTextComm(dst, e.comm())
	dst = append(dst, '>')
	uncounted := len(dst) - before
	return append(dst, "] "...), uncounted
}

// appendTextCall writes what follows the prefix; the line, as strace
// counts its columns, began at start.
func appendTextCall(dst []byte, start int, e *Event, v Verdict, o TextOptions) []byte {
	if o.Timestamps != NoTimestamps {
		dst = appendTimestamp(dst, e.UnixNs(o.WallOffsetNs), o)
		dst = append(dst, ' ')
	}
	dst = append(dst, "sendfile("...)
	dst = appendInt(dst, int64(e.OutFd))
	dst = append(dst, ", "...)
	dst = appendInt(dst, int64(e.InFd))
	dst = append(dst, ", "...)
	dst = appendTextOffset(dst, e)
	dst = append(dst, ", "...)
	dst = appendUint(dst, e.Count)
	dst = append(dst, ") "...)
	column := o.Column
	if column == 0 {
		column = resultColumn
	}
	for len(dst)-start < column {
		dst = append(dst, ' ')
	}
	dst = append(dst, "= "...)
	dst = appendTextResult(dst, e)
	if o.Durations {
		// strace -T: seconds with microseconds, truncated.
		d := e.DurationNs
		dst = append(dst, " <"...)
		dst = appendUint(dst, d/1e9)
		dst = append(dst, '.')
		dst = appendUintPadded(dst, d%1e9/1e3, 6, '0')
		dst = append(dst, '>')
	}
	if v.Violations != 0 {
		dst = append(dst, ViolationMarker...)
		dst = v.Violations.AppendNames(dst, ",")
	}
	return append(dst, '\n')
}

// appendTimestamp writes Unix time ns as strace's -t, -tt or -ttt does:
// truncated, not rounded.
func appendTimestamp(dst []byte, ns int64, o TextOptions) []byte {
	if o.Timestamps == EpochMicroseconds {
		dst = appendInt(dst, ns/1e9)
		dst = append(dst, '.')
		return appendUintPadded(dst, uint64(ns%1e9/1e3), 6, '0')
	}
	loc := o.Location
	if loc == nil {
		loc = time.Local
	}
	layout := "15:04:05"
	if o.Timestamps == Microseconds {
		layout = "15:04:05.000000"
	}
	return time.Unix(0, ns).In(loc).AppendFormat(dst, layout)
}

// appendTextOffset follows strace's sendfile decoder: NULL; the address when
// *offset cannot be read at entry (then nothing more); else [value], and
// " => [value]" again at exit when the call transferred data.
func appendTextOffset(dst []byte, e *Event) []byte {
	if e.OffsetNull() {
		return append(dst, "NULL"...)
	}
	if !e.hasFlag(loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK) {
		return appendHex(dst, e.OffsetPtr)
	}
	dst = appendTextOffsetValue(dst, e.OffsetBefore)
	if e.Errno() == 0 && e.Ret != 0 {
		dst = append(dst, " => "...)
		if !e.hasFlag(loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK) {
			return appendHex(dst, e.OffsetPtr)
		}
		dst = appendTextOffsetValue(dst, e.OffsetAfter)
	}
	return dst
}

// appendTextOffsetValue writes [N]; strace prints loff_t unsigned.
func appendTextOffsetValue(dst []byte, off int64) []byte {
	dst = append(dst, '[')
	dst = appendUint(dst, uint64(off))
	return append(dst, ']')
}

// appendTextResult writes what follows "= ": the value (unsigned, strace's
// default for return values), or the error as strace spells it.
func appendTextResult(dst []byte, e *Event) []byte {
	errno := e.Errno()
	if errno == 0 {
		return appendUint(dst, uint64(e.Ret))
	}
	t := lookupErrno(errno)
	switch {
	case t.name == "":
		dst = append(dst, "-1 ("...)
		dst = appendUnknownErrno(dst, errno)
		return append(dst, ')')
	case isRestart(errno):
		dst = append(dst, "? "...) // strace's: the call is not over
	default:
		dst = append(dst, "-1 "...)
	}
	dst = append(dst, t.name...)
	dst = append(dst, " ("...)
	dst = append(dst, t.message...)
	return append(dst, ')')
}

// appendTextComm writes a command name on one line: control bytes and the
// backslash become \xNN, so that a hostile name cannot forge a line.
func appendTextComm(dst []byte, comm []byte) []byte {
	for _, c := range comm {
		if c < 0x20 || c == 0x7f || c == '\\' {
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendHex writes a non-NULL user-space address as strace does (%#lx).
func appendHex(dst []byte, p uint64) []byte {
	return strconv.AppendUint(append(dst, "0x"...), p, 16)
}

// appendUintPadded writes n right-aligned in width columns, filled with pad.
func appendUintPadded(dst []byte, n uint64, width int, pad byte) []byte {
	for digits := decimalWidth(n); digits < width; digits++ {
		dst = append(dst, pad)
	}
	return appendUint(dst, n)
}
