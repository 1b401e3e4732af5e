// Package events turns the kernel's raw sendfile records into facts: it
// decodes a ring-buffer record into an Event, checks it against sendfile's
// contract (Validate), accumulates a Summary, renders strace-compatible text
// and JSON Lines, and evaluates --expect expressions.
//
// Decode, Validate, AppendText, AppendJSON and Aggregator.Add run once per
// sendfile call of the watched program and never allocate.
package events

import (
	"fmt"
	"structs"
	"syscall"
	"unsafe"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// Event is one sendfile call as the kernel reported it. It has the layout of
// the BPF program's struct event, shared through bpf2go rather than mirrored
// by hand, so a record is copied into it byte for byte. The generated struct
// is embedded (its fields are promoted: e.Ret, e.Count, ...) rather than
// used as the underlying type because a defined type could not have both
// the generated Comm field and the Comm method; the raw bytes stay
// reachable as e.SfwatchEvent.Comm.
type Event struct {
	_ structs.HostLayout
	loader.SfwatchEvent
}

// RecordSize is the size of one ring-buffer record, struct event.
const RecordSize = int(unsafe.Sizeof(Event{}))

// maxErrno is the largest value the kernel returns as -errno (MAX_ERRNO).
const maxErrno = 4095

// Decode copies one raw record into e without allocating. The copy goes
// through bytes, so raw needs no particular alignment; the layout and byte
// order are the host's, as for the BPF program that wrote the record.
func Decode(raw []byte, e *Event) error {
	if len(raw) != RecordSize {
		return fmt.Errorf("decoding event: record of %d bytes, want %d", len(raw), RecordSize)
	}
	copy(e.bytes(), raw)
	return nil
}

// bytes is e's memory as a byte slice: the inverse of Decode.
func (e *Event) bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(e)), RecordSize)
}

// OffsetNull reports whether the offset argument was NULL, in which case the
// kernel moved in_fd's file position instead (invisible to the tracepoint).
func (e *Event) OffsetNull() bool { return e.OffsetPtr == 0 }

// UnixNs is when the call entered the kernel in Unix time, ns: StartNs is
// CLOCK_MONOTONIC (the BPF clock), wallOffsetNs comes from WallOffset.
func (e *Event) UnixNs(wallOffsetNs int64) int64 { return int64(e.StartNs) + wallOffsetNs }

// offsetKnown reports whether both *offset values were read from user
// memory. Only meaningful for a pointer offset.
func (e *Event) offsetKnown() bool {
	const both = loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK | loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK
	return loader.SfwatchEventFlag(e.Flags)&both == both
}

func (e *Event) hasFlag(f loader.SfwatchEventFlag) bool {
	return loader.SfwatchEventFlag(e.Flags)&f != 0
}

// comm is the command name up to its first NUL, without copying.
func (e *Event) comm() []byte {
	raw := e.SfwatchEvent.Comm[:]
	for i, c := range raw {
		if c == 0 {
			return raw[:i]
		}
	}
	return raw
}

// Comm returns the thread's command name. It allocates: not for the hot path.
func (e *Event) Comm() string { return string(e.comm()) }

// Errno returns the error of a failed call, or 0 when Ret is not an error
// code: Ret >= 0, or Ret below -4095, which no kernel returns as an error
// (Validate reports it as ret_out_of_range).
func (e *Event) Errno() syscall.Errno {
	if e.Ret < 0 && e.Ret >= -maxErrno {
		return syscall.Errno(-e.Ret)
	}
	return 0
}

// Class is the kind of result of a call, as the kernel counts them.
type Class uint8

const (
	ClassOK    Class = iota // ret == count (or more: a violation, still not short)
	ClassShort              // 0 < ret < count: legal
	ClassEOF                // ret == 0 with count > 0: end of file
	ClassError              // ret < 0
	ClassEmpty              // ret == 0 with count == 0: asked for nothing
	numClasses
)

var classNames = [numClasses]string{"ok", "short", "eof", "error", "empty"}

func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// classify matches the kernel's counters (COUNTER_SHORT, _EOF, _ERRORS), so
// per-event classes and exact totals mean the same thing; but the kernel
// counts an empty call (count 0) with EOF: Aggregator.Summary takes the
// delivered ones out.
func classify(e *Event) Class {
	switch {
	case e.Ret < 0:
		return ClassError
	case e.Ret == 0 && e.Count == 0:
		return ClassEmpty
	case e.Ret == 0:
		return ClassEOF
	case uint64(e.Ret) < e.Count:
		return ClassShort
	default:
		return ClassOK
	}
}
