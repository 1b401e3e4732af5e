package events

import (
	"math/bits"
	"strconv"
	"syscall"
)

// Violations is a set of broken rules of sendfile's contract, one bit each.
type Violations uint32

// The rules. The bit positions are part of the metrics' labels only through
// Names, so they may change; the names may not.
const (
	RetOverCount       Violations = 1 << iota // ret > count
	RetOverMaxRW                              // ret > MAX_RW_COUNT
	OffsetNotAdvanced                         // pointer offset, ret > 0, after != before + ret
	OffsetMovedOnError                        // pointer offset, ret <= 0 (but not -EFAULT), after != before
	UnexpectedErrno                           // an errno outside the documented set
	RetOutOfRange                             // ret < -4095: not an errno
	numRules           = iota
)

// ruleNames are the rules as they appear in text, JSON, metrics and
// reports, indexed by bit.
var ruleNames = [numRules]string{
	"ret_over_count",
	"ret_over_max_rw",
	"offset_not_advanced",
	"offset_moved_on_error",
	"unexpected_errno",
	"ret_out_of_range",
}

// maxRWCount is MAX_RW_COUNT, INT_MAX rounded down to a page: the kernel
// clamps every read/write/sendfile count to it.
const maxRWCount = 0x7ffff000

// Names lists the rules in v, in bit order. It allocates; for reports.
func (v Violations) Names() []string {
	names := make([]string, 0, bits.OnesCount32(uint32(v)))
	for set := uint32(v); set != 0; set &= set - 1 {
		names = append(names, ruleName(bits.TrailingZeros32(set)))
	}
	return names
}

// AppendNames appends the rules in v, in bit order, separated by sep.
func (v Violations) AppendNames(dst []byte, sep string) []byte {
	for set := uint32(v); set != 0; set &= set - 1 {
		if set != uint32(v) { // not the first name
			dst = append(dst, sep...)
		}
		dst = append(dst, ruleName(bits.TrailingZeros32(set))...)
	}
	return dst
}

// ruleName names one bit. Bits no rule uses (only a Violations built by
// hand has them) still get a name, so nothing is dropped from a report.
func ruleName(bit int) string {
	if bit < numRules {
		return ruleNames[bit]
	}
	return "rule_bit_" + strconv.Itoa(bit)
}

// Verdict is what Validate concluded about one event.
type Verdict struct {
	Class      Class
	Violations Violations
	// OffsetUnknown is set for a pointer offset whose value before or after
	// the call could not be read from user memory: the offset rules make no
	// claim then, and Event.OffsetBefore/OffsetAfter are not to be trusted.
	OffsetUnknown bool
}

// Checked is an event with the verdict Validate gave it when it was
// delivered: what is kept of an event past its sink call, so that nothing
// validates it again.
type Checked struct {
	Event
	Verdict Verdict
}

// Validate checks one call against sendfile's contract (docs/design.md). A short
// transfer and end of file are legal; an unreadable offset is unknown, never
// a violation.
func Validate(e *Event) Verdict {
	v := Verdict{Class: classify(e)}
	ret := e.Ret
	switch {
	case ret > 0:
		if uint64(ret) > e.Count {
			v.Violations |= RetOverCount
		}
		if ret > maxRWCount {
			v.Violations |= RetOverMaxRW
		}
	case ret < -maxErrno:
		v.Violations |= RetOutOfRange
	case ret < 0:
		if !inContract(syscall.Errno(-ret)) {
			v.Violations |= UnexpectedErrno
		}
	}

	if e.OffsetNull() {
		return v
	}
	if !e.offsetKnown() {
		v.OffsetUnknown = true
		return v
	}
	switch {
	case ret > 0:
		// Wrapping addition, as the kernel's loff_t arithmetic would: a
		// wrapped offset is still "advanced by ret".
		if e.OffsetAfter != e.OffsetBefore+ret {
			v.Violations |= OffsetNotAdvanced
		}
	case ret == -int64(syscall.EFAULT):
		// No claim: the failing access may be the write-back of *offset
		// itself, after the data moved.
	default:
		if e.OffsetAfter != e.OffsetBefore {
			v.Violations |= OffsetMovedOnError
		}
	}
	return v
}
