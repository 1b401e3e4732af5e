package report

import (
	"github.com/sfwatch/sfwatch/internal/events"
)

// maxOffenders is how many events a failed expectation shows.
const maxOffenders = 3

// Offenders keeps, for each expectation, the first events that add to its
// quantity: the calls to show when it fails (the EBADF behind errors==0).
// It is a session sink.
type Offenders struct {
	expects []events.Expectation
	kept    [][]events.Checked
}

// NewOffenders keeps the offenders of expects, in their order.
func NewOffenders(expects []events.Expectation) *Offenders {
	return &Offenders{expects: expects, kept: make([][]events.Checked, len(expects))}
}

func (o *Offenders) Event(e *events.Event, v events.Verdict) {
	for i, x := range o.expects {
		if len(o.kept[i]) < maxOffenders && x.Counts(e, v) {
			o.kept[i] = append(o.kept[i], events.Checked{Event: *e, Verdict: v})
		}
	}
}

func (o *Offenders) Idle() {}

// Text renders the events kept for expectation i as strace-style lines.
func (o *Offenders) Text(i int) string {
	var b []byte
	evs := o.kept[i]
	for i := range evs {
		b = events.AppendText(b, &evs[i].Event, evs[i].Verdict, events.TextOptions{})
	}
	return string(b)
}
