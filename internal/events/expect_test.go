package events

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sfwatch/sfwatch/internal/counters"
)

func TestParseExpectation(t *testing.T) {
	for _, tc := range []struct {
		in            string
		key, op, expr string
		n             uint64
	}{
		{"calls>=1", "calls", ">=", "calls>=1", 1},
		{"calls >= 1", "calls", ">=", "calls >= 1", 1},
		{"  calls\t>=  1 ", "calls", ">=", "calls\t>=  1", 1},
		{"bytes==4096", "bytes", "==", "bytes==4096", 4096},
		{"errors != 0", "errors", "!=", "errors != 0", 0},
		{"short<=3", "short", "<=", "short<=3", 3},
		{"eof>0", "eof", ">", "eof>0", 0},
		{"offset_null < 10", "offset_null", "<", "offset_null < 10", 10},
		{"offset_ptr==0", "offset_ptr", "==", "offset_ptr==0", 0},
		{"violations==0", "violations", "==", "violations==0", 0},
		{"lost == 0", "lost", "==", "lost == 0", 0},
		{"bytes<18446744073709551615", "bytes", "<", "bytes<18446744073709551615", 1<<64 - 1},
		{"calls>=007", "calls", ">=", "calls>=007", 7},
	} {
		x, err := ParseExpectation(tc.in)
		if err != nil {
			t.Errorf("ParseExpectation(%q): %v", tc.in, err)
			continue
		}
		if want := (Expectation{Expr: tc.expr, Key: tc.key, Op: tc.op, N: tc.n}); x != want {
			t.Errorf("ParseExpectation(%q) = %+v, want %+v", tc.in, x, want)
		}
	}
}

func TestParseExpectationErrors(t *testing.T) {
	for _, tc := range []struct{ in, why string }{
		{"", "want KEY OP N"},
		{"foo", `unknown key "foo"`},
		{"foo>=1", `unknown key "foo"`},
		{"Calls>=1", "want KEY OP N"},
		{">=1", "want KEY OP N"},
		{"calls", "want an operator"},
		{"calls 1", "want an operator"},
		{"calls=1", "want an operator"},
		{"calls=>1", "want an operator"},
		{"calls>=", "want a non-negative integer"},
		{"calls>=-1", "want a non-negative integer"},
		{"calls>=+1", "want a non-negative integer"},
		{"calls>=1.5", "want a non-negative integer"},
		{"calls>=0x10", "want a non-negative integer"},
		{"calls>=1_000", "want a non-negative integer"},
		{"calls>=1 2", "want a non-negative integer"},
		{"calls>=1 && lost==0", "want a non-negative integer"},
		{"calls>=>1", "want a non-negative integer"},
		{"calls>=18446744073709551616", "want a non-negative integer"},
	} {
		_, err := ParseExpectation(tc.in)
		if err == nil {
			t.Errorf("ParseExpectation(%q): no error", tc.in)
			continue
		}
		msg := err.Error()
		for _, want := range []string{`bad expectation "` + tc.in + `"`, tc.why, "e.g. calls>=1",
			"keys: calls, bytes, errors, short, eof, empty, offset_null, offset_ptr, violations, lost"} {
			if !strings.Contains(msg, want) {
				t.Errorf("ParseExpectation(%q): error %q lacks %q", tc.in, msg, want)
			}
		}
	}
}

func TestEvaluate(t *testing.T) {
	complete := Summary{Totals: counters.Totals{Calls: 10, Bytes: 40960, Errors: 2, Short: 1, EOF: 3, OffsetNull: 6, OffsetPtr: 4}, Violations: 1, Events: 10}
	for _, tc := range []struct {
		expr   string
		actual uint64
		ok     bool
	}{
		{"calls==10", 10, true}, {"calls==9", 10, false},
		{"calls!=9", 10, true}, {"calls!=10", 10, false},
		{"calls>=10", 10, true}, {"calls>=11", 10, false},
		{"calls<=10", 10, true}, {"calls<=9", 10, false},
		{"calls>9", 10, true}, {"calls>10", 10, false},
		{"calls<11", 10, true}, {"calls<10", 10, false},
		{"bytes==40960", 40960, true},
		{"errors==2", 2, true},
		{"short==1", 1, true},
		{"eof==3", 3, true},
		{"offset_null==6", 6, true},
		{"offset_ptr==4", 4, true},
		{"violations==0", 1, false}, {"violations==1", 1, true},
		{"lost==0", 0, true}, {"lost>0", 0, false},
	} {
		x, err := ParseExpectation(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		o := x.Evaluate(complete)
		if o.OK == nil || *o.OK != tc.ok || o.Actual != tc.actual || o.Expectation != x {
			t.Errorf("%s: OK %v, actual %d; want %v, %d", tc.expr, fmtOK(o.OK), o.Actual, tc.ok, tc.actual)
		}
	}
}

// Violations needs every event; the kernel's counts do not.
func TestEvaluateIncomplete(t *testing.T) {
	for _, s := range []Summary{
		{Totals: counters.Totals{Calls: 10, Lost: 1}, Events: 9},
		{Totals: counters.Totals{Calls: 10, SampledOut: 9}, Events: 1},
	} {
		x, _ := ParseExpectation("violations==0")
		if o := x.Evaluate(s); o.OK != nil {
			t.Errorf("violations==0 with %d lost, %d sampled out: OK = %v, want inconclusive", s.Lost, s.SampledOut, *o.OK)
		}
		for _, expr := range []string{"calls==10", "bytes==0", "errors==0", "short==0", "eof==0", "offset_null==0", "offset_ptr==0", "lost==" + strconv.FormatUint(s.Lost, 10)} {
			x, _ := ParseExpectation(expr)
			if o := x.Evaluate(s); o.OK == nil || !*o.OK {
				t.Errorf("%s with %d lost, %d sampled out: OK = %v, want true", expr, s.Lost, s.SampledOut, fmtOK(o.OK))
			}
		}
	}
}

// A skipped program makes every kernel count a lower bound: only a lower
// bound that already holds still concludes.
func TestEvaluateSkipped(t *testing.T) {
	s := Summary{Totals: counters.Totals{Calls: 10}, Events: 10, Skipped: 2, SkippedByProgram: map[string]uint64{"sys_exit_sendfile64": 2}}
	for _, tc := range []struct {
		expr string
		ok   *bool // nil: inconclusive
	}{
		{"calls>=1", ptr(true)},
		{"calls>9", ptr(true)},
		{"calls>=11", nil}, // the skipped calls may make it hold
		{"calls==10", nil},
		{"errors==0", nil},
		{"lost==0", nil},
		{"bytes<=100", nil},
		{"calls!=3", nil},
		{"violations==0", nil},
	} {
		x, err := ParseExpectation(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		o := x.Evaluate(s)
		if (o.OK == nil) != (tc.ok == nil) || (o.OK != nil && *o.OK != *tc.ok) {
			t.Errorf("%s with 2 program runs skipped: OK = %v, want %v", tc.expr, fmtOK(o.OK), fmtOK(tc.ok))
		}
	}
	if s.Complete() {
		t.Error("a summary with skipped program runs is Complete")
	}
}

func ptr[T any](v T) *T { return &v }

func TestEvaluateUnparsed(t *testing.T) {
	for _, x := range []Expectation{{Key: "nope", Op: "=="}, {Key: "calls", Op: "~"}} {
		if o := x.Evaluate(Summary{}); o.OK == nil || *o.OK {
			t.Errorf("%+v: OK = %v, want false", x, fmtOK(o.OK))
		}
	}
}

func fmtOK(ok *bool) string {
	if ok == nil {
		return "inconclusive"
	}
	if *ok {
		return "true"
	}
	return "false"
}

func TestExpectationCounts(t *testing.T) {
	ok := &Event{}
	ok.Ret, ok.Count, ok.OffsetPtr = 4096, 4096, 0x1000
	bad := &Event{}
	bad.Ret, bad.Count = -9, 10
	for _, tc := range []struct {
		expr    string
		ok, bad bool
	}{
		{"calls>0", true, true},
		{"bytes>0", true, false},
		{"errors==0", false, true},
		{"offset_null==0", false, true},
		{"offset_ptr==0", true, false},
		{"violations==0", false, false},
		{"lost==0", false, false},
	} {
		x, err := ParseExpectation(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := x.Counts(ok, Validate(ok)); got != tc.ok {
			t.Errorf("%s: Counts(ok event) = %v, want %v", tc.expr, got, tc.ok)
		}
		if got := x.Counts(bad, Validate(bad)); got != tc.bad {
			t.Errorf("%s: Counts(EBADF event) = %v, want %v", tc.expr, got, tc.bad)
		}
	}
}
