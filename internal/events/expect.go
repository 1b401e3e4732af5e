package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Expectation is one --expect EXPR: KEY OP N, such as "calls>=1".
type Expectation struct {
	Expr string // as written, trimmed
	Key  string
	Op   string
	N    uint64
}

// expectKeys are the quantities an expectation can test, in the order the
// error message lists them. perEvent marks the ones that need every event
// and are inconclusive when some were lost or sampled out; the others are
// the kernel's exact counts. counts tells whether one event adds to the
// quantity, to show the events behind a failed expectation.
var expectKeys = []struct {
	name     string
	perEvent bool
	value    func(Summary) uint64
	counts   func(*Event, Verdict) bool
}{
	{"calls", false, func(s Summary) uint64 { return s.Calls }, func(*Event, Verdict) bool { return true }},
	{"bytes", false, func(s Summary) uint64 { return s.Bytes }, func(e *Event, _ Verdict) bool { return e.Ret > 0 }},
	{"errors", false, func(s Summary) uint64 { return s.Errors }, func(_ *Event, v Verdict) bool { return v.Class == ClassError }},
	{"short", false, func(s Summary) uint64 { return s.Short }, func(_ *Event, v Verdict) bool { return v.Class == ClassShort }},
	{"eof", false, func(s Summary) uint64 { return s.EOF }, func(_ *Event, v Verdict) bool { return v.Class == ClassEOF }},
	{"empty", false, func(s Summary) uint64 { return s.Empty }, func(_ *Event, v Verdict) bool { return v.Class == ClassEmpty }},
	{"offset_null", false, func(s Summary) uint64 { return s.OffsetNull }, func(e *Event, _ Verdict) bool { return e.OffsetNull() }},
	{"offset_ptr", false, func(s Summary) uint64 { return s.OffsetPtr }, func(e *Event, _ Verdict) bool { return !e.OffsetNull() }},
	{"violations", true, func(s Summary) uint64 { return s.Violations }, func(_ *Event, v Verdict) bool { return v.Violations != 0 }},
	{"lost", false, func(s Summary) uint64 { return s.Lost }, func(*Event, Verdict) bool { return false }},
	{"escaped", false, func(s Summary) uint64 { return s.Escaped }, func(*Event, Verdict) bool { return false }},
}

// expectOps are the comparisons, two-character ones first so that ">="
// is not read as ">" followed by "=".
var expectOps = []struct {
	op   string
	test func(actual, n uint64) bool
}{
	{"==", func(a, n uint64) bool { return a == n }},
	{"!=", func(a, n uint64) bool { return a != n }},
	{">=", func(a, n uint64) bool { return a >= n }},
	{"<=", func(a, n uint64) bool { return a <= n }},
	{">", func(a, n uint64) bool { return a > n }},
	{"<", func(a, n uint64) bool { return a < n }},
}

// ParseExpectation reads KEY OP N; spaces around OP are optional.
func ParseExpectation(s string) (Expectation, error) {
	x := Expectation{Expr: strings.TrimSpace(s)}
	rest := x.Expr

	i := strings.IndexFunc(rest, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r == '_') })
	if i < 0 {
		i = len(rest)
	}
	x.Key, rest = rest[:i], strings.TrimLeft(rest[i:], " \t")
	if x.Key == "" {
		return x, expectError(s, "want KEY OP N, e.g. calls>=1")
	}
	if findKey(x.Key) < 0 {
		return x, expectError(s, fmt.Sprintf("unknown key %q", x.Key))
	}

	for _, o := range expectOps {
		if strings.HasPrefix(rest, o.op) {
			x.Op, rest = o.op, strings.TrimLeft(rest[len(o.op):], " \t")
			break
		}
	}
	if x.Op == "" {
		return x, expectError(s, "want an operator (== != >= <= > <) after "+x.Key)
	}

	// Base 10: no sign, no 0x or 1_000 forms, nothing after the number.
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return x, expectError(s, fmt.Sprintf("want a non-negative integer after %s, got %q", x.Op, rest))
	}
	x.N = n
	return x, nil
}

func expectError(s, why string) error {
	keys := make([]string, len(expectKeys))
	for i, k := range expectKeys {
		keys[i] = k.name
	}
	return fmt.Errorf("bad expectation %q: %s; want KEY OP N, e.g. calls>=1; keys: %s", s, why, strings.Join(keys, ", "))
}

func findKey(name string) int {
	for i, k := range expectKeys {
		if k.name == name {
			return i
		}
	}
	return -1
}

// Counts reports whether e adds to x's quantity (an error event for
// errors==0, say): the events to show when x fails.
func (x Expectation) Counts(e *Event, v Verdict) bool {
	k := findKey(x.Key)
	return k >= 0 && expectKeys[k].counts(e, v)
}

// Outcome is an evaluated expectation.
type Outcome struct {
	Expectation
	OK     *bool // nil: inconclusive, for the reason in Why
	Actual uint64
	Why    string // why it is inconclusive
}

// Why an expectation is inconclusive.
const (
	WhyIncomplete = "events were lost or sampled out"
	WhySkipped    = "the kernel skipped a program: calls may be missing"
)

// Evaluate tests x against s. The kernel's counts are exact, so those
// expectations conclude, unless the kernel skipped a program: then every
// count is a lower bound, and only a lower bound that already holds
// (calls>=1 with calls counted) concludes. violations needs every event
// and is inconclusive when !s.Complete(). An Expectation not made by
// ParseExpectation fails.
func (x Expectation) Evaluate(s Summary) Outcome {
	out := Outcome{Expectation: x}
	k := findKey(x.Key)
	if k < 0 {
		return out.conclude(false)
	}
	out.Actual = expectKeys[k].value(s)
	if expectKeys[k].perEvent && !s.Complete() {
		out.Why = WhyIncomplete
		if s.Lost == 0 && s.SampledOut == 0 {
			out.Why = WhySkipped
		}
		return out
	}
	for _, o := range expectOps {
		if o.op != x.Op {
			continue
		}
		ok := o.test(out.Actual, x.N)
		if s.Skipped != 0 && !(ok && (o.op == ">=" || o.op == ">")) {
			out.Why = WhySkipped
			return out
		}
		return out.conclude(ok)
	}
	return out.conclude(false)
}

func (o Outcome) conclude(ok bool) Outcome {
	o.OK = &ok
	return o
}
