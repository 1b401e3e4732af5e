package events

import (
	"unicode/utf8"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// JSONOptions changes what AppendJSON adds to each object.
type JSONOptions struct {
	// Time adds time_unix_ns, as -t, -tt and -ttt ask. Off by default,
	// like strace's timestamps: its 19 digits are a fifth more to write
	// per object (bench/README.md, Rendering).
	Time bool
	// WallOffsetNs turns StartNs into Unix time: see WallOffset.
	WallOffsetNs int64
}

// AppendJSON appends one JSON Lines object ending in '\n':
//
//	{"pid":1,"tid":1,"comm":"server","out_fd":5,"in_fd":7,
//	 "offset":{"before":0,"after":4096},"count":4096,"ret":4096,"errno":null,
//	 "class":"ok","duration_ns":1234,"start_ns":5678,
//	 "time_unix_ns":1795893920027356000,"violations":[]}
//
// start_ns is CLOCK_MONOTONIC, the BPF clock; time_unix_ns, written when
// o.Time, is the same instant on the wall clock, to line calls up with a
// server's logs. offset is null for a NULL argument; before or after is
// null when it could not be read. errno is the name of the error ("EBADF",
// or "errno N" for a code without one) and null unless ret is an error
// code, -4095..-1.
// Written by hand, field by field, because encoding/json allocates and
// reflects on every call.
func AppendJSON(dst []byte, e *Event, v Verdict, o JSONOptions) []byte {
	dst = append(dst, `{"pid":`...)
	dst = appendUint(dst, uint64(e.Pid))
	dst = append(dst, `,"tid":`...)
	dst = appendUint(dst, uint64(e.Tid))
	dst = append(dst, `,"comm":`...)
	dst = appendJSONString(dst, e.comm())
	dst = append(dst, `,"out_fd":`...)
	dst = appendInt(dst, int64(e.OutFd))
	dst = append(dst, `,"in_fd":`...)
	dst = appendInt(dst, int64(e.InFd))
	dst = append(dst, `,"offset":`...)
	if e.OffsetNull() {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, `{"before":`...)
		dst = appendJSONOffset(dst, e.OffsetBefore, e.hasFlag(loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK))
		dst = append(dst, `,"after":`...)
		dst = appendJSONOffset(dst, e.OffsetAfter, e.hasFlag(loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK))
		dst = append(dst, '}')
	}
	dst = append(dst, `,"count":`...)
	dst = appendUint(dst, e.Count)
	dst = append(dst, `,"ret":`...)
	dst = appendInt(dst, e.Ret)
	dst = append(dst, `,"errno":`...)
	if errno := e.Errno(); errno != 0 {
		dst = append(dst, '"')
		dst = appendErrnoName(dst, errno) // names are [A-Z0-9_] or "errno N": nothing to escape
		dst = append(dst, '"')
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"class":"`...)
	dst = append(dst, v.Class.String()...)
	dst = append(dst, `","duration_ns":`...)
	dst = appendUint(dst, e.DurationNs)
	dst = append(dst, `,"start_ns":`...)
	dst = appendUint(dst, e.StartNs)
	if o.Time {
		dst = append(dst, `,"time_unix_ns":`...)
		dst = appendInt(dst, e.UnixNs(o.WallOffsetNs))
	}
	dst = append(dst, `,"violations":[`...)
	if v.Violations != 0 {
		// Rule names are snake_case: quoting is all the escaping they need.
		dst = append(dst, '"')
		dst = v.Violations.AppendNames(dst, `","`)
		dst = append(dst, '"')
	}
	return append(dst, "]}\n"...)
}

func appendJSONOffset(dst []byte, off int64, known bool) []byte {
	if !known {
		return append(dst, "null"...)
	}
	return appendInt(dst, off)
}

// appendJSONString writes s as a JSON string. A command name is whatever
// bytes the program set (prctl PR_SET_NAME), so quotes, backslashes and
// control bytes are escaped, and bytes that are not UTF-8 become U+FFFD, as
// encoding/json does, to keep every line valid JSON.
func appendJSONString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, `\n`...)
		case c == '\r':
			dst = append(dst, `\r`...)
		case c == '\t':
			dst = append(dst, `\t`...)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"')
}
