package session

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestLossNotice checks the notice's wording and rate without a
// kernel: one line per interval in which the total grew, none otherwise.
func TestLossNotice(t *testing.T) {
	var out bytes.Buffer
	n := &lossNotice{w: &out, interval: 10 * time.Second}
	for _, lost := range []uint64{0, 0, 5, 5, 12, 12, 12, 1000012} {
		n.observe(lost)
	}
	want := "sfwatch: 5 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 7 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 1000000 events lost in the last 10s (ring buffer full; totals stay exact)\n"
	if out.String() != want {
		t.Errorf("notices:\n%s\nwant:\n%s", out.String(), want)
	}

	// run: one read per tick, nothing between ticks, a failed read skipped
	// (its losses are reported at the next tick), returns on stop.
	out.Reset()
	n = &lossNotice{w: &out, interval: 10 * time.Second}
	tick := make(chan time.Time)
	stop := make(chan struct{})
	reads := []struct {
		lost uint64
		err  error
	}{{3, nil}, {9, errors.New("busy")}, {9, nil}, {9, nil}}
	i := 0
	done := make(chan struct{})
	go func() {
		n.run(func() (uint64, error) { r := reads[i]; i++; return r.lost, r.err }, tick, stop)
		close(done)
	}()
	for range reads {
		tick <- time.Now()
	}
	close(stop)
	<-done
	if i != len(reads) {
		t.Errorf("%d reads for %d ticks", i, len(reads))
	}
	want = "sfwatch: 3 events lost in the last 10s (ring buffer full; totals stay exact)\n" +
		"sfwatch: 6 events lost in the last 10s (ring buffer full; totals stay exact)\n"
	if out.String() != want {
		t.Errorf("notices:\n%s\nwant:\n%s", out.String(), want)
	}
}
