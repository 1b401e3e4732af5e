package events

import (
	"math"
	"strconv"
	"testing"
)

func TestAppendUintMatchesStrconv(t *testing.T) {
	var ns []uint64
	for _, p := range powersOf10 {
		ns = append(ns, p-1, p, p+1, p*9, p*9+9)
	}
	ns = append(ns, 0, 4096, 0x7ffff000, math.MaxUint32, math.MaxInt64, math.MaxUint64)
	for _, n := range ns {
		if got, want := string(appendUint([]byte("x"), n)), strconv.AppendUint([]byte("x"), n, 10); got != string(want) {
			t.Errorf("appendUint(%d) = %q, want %q", n, got, want)
		}
		if w := decimalWidth(n); w != len(strconv.FormatUint(n, 10)) {
			t.Errorf("decimalWidth(%d) = %d", n, w)
		}
	}
	for _, n := range []int64{0, -1, 9, -10, 4096, -4096, math.MaxInt64, math.MinInt64, math.MinInt64 + 1} {
		if got, want := string(appendInt(nil, n)), strconv.FormatInt(n, 10); got != want {
			t.Errorf("appendInt(%d) = %q, want %q", n, got, want)
		}
	}
	// Room already there, and none: both paths.
	if got := string(appendUint(make([]byte, 0, 64), 123456789)); got != "123456789" {
		t.Errorf("with capacity: %q", got)
	}
	if got := string(appendUint(nil, 123456789)); got != "123456789" {
		t.Errorf("without capacity: %q", got)
	}
}

func TestAppendUintDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = appendInt(appendUint(buf[:0], math.MaxUint64), math.MinInt64) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
