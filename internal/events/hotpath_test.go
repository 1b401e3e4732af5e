package events

import (
	"testing"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// hotPathEvents cover every branch of the per-event code.
func hotPathEvents() []Event {
	odd := call(4, 3, 10, 10)
	setComm(&odd, "a\"b\\c\n\xff\x01é")
	return []Event{
		call(5, 7, 3584, 3584),
		odd,
		withOffset(call(4, 3, 4096, 4096), 0, 4096),
		withOffset(call(4, 3, 4096, 0), 1<<20, 1<<20),
		withOffset(call(4, 3, 10, 4096), 0, 0), // two violations
		withUnreadableOffset(call(4, 3, 4096, -14), 0),
		withUnreadableOffset(call(4, 3, 4096, 4096), loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK),
		call(1, 3, 10, -9),
		call(1, 3, 10, -512),
		call(1, 3, 10, -1234), // unnamed errno
		call(1, 3, 10, -5000), // not an errno
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	events := hotPathEvents()
	raws := make([][]byte, len(events))
	verdicts := make([]Verdict, len(events))
	for i := range events {
		raws[i] = encode(&events[i])
		verdicts[i] = Validate(&events[i])
	}
	buf := make([]byte, 0, 4096)
	agg := new(Aggregator)
	var e Event
	for _, tc := range []struct {
		name string
		f    func(i int)
	}{
		{"Decode", func(i int) {
			if err := Decode(raws[i], &e); err != nil {
				t.Fatal(err)
			}
		}},
		{"Validate", func(i int) { verdicts[i] = Validate(&events[i]) }},
		{"AppendText", func(i int) { buf = AppendText(buf[:0], &events[i], verdicts[i], TextOptions{Durations: true}) }},
		{"AppendJSON", func(i int) {
			buf = AppendJSON(buf[:0], &events[i], verdicts[i], JSONOptions{Time: i%2 == 0, WallOffsetNs: 1795893920_000000000})
		}},
		{"Aggregator.Add", func(i int) { agg.Add(&events[i], verdicts[i]) }},
	} {
		if allocs := testing.AllocsPerRun(100, func() {
			for i := range events {
				tc.f(i)
			}
		}); allocs != 0 {
			t.Errorf("%s: %v allocations per run of %d events, want 0", tc.name, allocs, len(events))
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	ev := withOffset(call(4, 3, 4096, 4096), 0, 4096)
	raw := encode(&ev)
	var e Event
	b.SetBytes(int64(RecordSize))
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	e := withOffset(call(4, 3, 4096, 4096), 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		Validate(&e)
	}
}

func BenchmarkAppendText(b *testing.B) {
	e := call(5, 7, 4096, 4096)
	v := Validate(&e)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendText(buf[:0], &e, v, TextOptions{Durations: true})
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := withOffset(call(4, 3, 4096, 4096), 0, 4096)
	v := Validate(&e)
	buf := make([]byte, 0, 512)
	for _, bc := range []struct {
		name string
		o    JSONOptions
	}{
		{"default", JSONOptions{}},
		{"time_unix_ns", JSONOptions{Time: true, WallOffsetNs: 1795893920_000000000}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendJSON(buf[:0], &e, v, bc.o)
			}
		})
	}
}

func BenchmarkAggregatorAdd(b *testing.B) {
	e := call(5, 7, 4096, 4096)
	v := Validate(&e)
	a := new(Aggregator)
	b.ReportAllocs()
	for b.Loop() {
		e.DurationNs += 7 // spread over the histogram
		a.Add(&e, v)
	}
}

// BenchmarkPipeline is what the consumer does per record with text output.
func BenchmarkPipeline(b *testing.B) {
	ev := call(5, 7, 4096, 4096)
	raw := encode(&ev)
	var e Event
	a := new(Aggregator)
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(RecordSize))
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(raw, &e); err != nil {
			b.Fatal(err)
		}
		v := Validate(&e)
		a.Add(&e, v)
		buf = AppendText(buf[:0], &e, v, TextOptions{})
	}
}

func BenchmarkTextAppend(b *testing.B) {
	e := call(5, 7, 4096, 4096)
	v := Validate(&e)
	r := Text{Options: TextOptions{Durations: true}}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.Append(buf[:0], &e, v)
	}
}
