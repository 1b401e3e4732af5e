package main

import (
	"github.com/sfwatch/sfwatch/internal/events"
)

// maxOffenders is how many events a failed expectation shows.
const maxOffenders = 3

// offenders keeps, for each expectation, the first events that add to its
// quantity: the calls to show when it fails (the EBADF behind errors==0).
type offenders struct {
	expects []events.Expectation
	kept    [][]events.Checked
}

func newOffenders(expects []events.Expectation) *offenders {
	return &offenders{expects: expects, kept: make([][]events.Checked, len(expects))}
}

func (o *offenders) Event(e *events.Event, v events.Verdict) {
	for i, x := range o.expects {
		if len(o.kept[i]) < maxOffenders && x.Counts(e, v) {
			o.kept[i] = append(o.kept[i], events.Checked{Event: *e, Verdict: v})
		}
	}
}

func (o *offenders) Idle() {}
