package session

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// LossNoticeInterval is how often, at most, a session says that events
// were lost (Config.LossNotice): once per interval in which some were, one
// line each time.
const LossNoticeInterval = 10 * time.Second

// lossNotice prints "sfwatch: N events lost in the last 10s" while a
// session runs. Losses are otherwise only in the final accounting line and
// in sfwatch_events_lost_total; a long attach should say so as it happens,
// without a line per lost event.
type lossNotice struct {
	w        io.Writer
	interval time.Duration
	last     uint64 // the kernel's lost total at the previous tick
}

// observe takes the kernel's lost total at the end of an interval and
// prints the notice when it grew.
func (n *lossNotice) observe(lost uint64) {
	if lost > n.last {
		fmt.Fprintf(n.w, "sfwatch: %d events lost in the last %v (ring buffer full; totals stay exact)\n",
			lost-n.last, n.interval)
	}
	n.last = lost
}

// run calls observe with read's total once per interval until stop is
// closed. A failed read is skipped: the next tick counts those losses.
func (n *lossNotice) run(read func() (uint64, error), tick <-chan time.Time, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-tick:
			if lost, err := read(); err == nil {
				n.observe(lost)
			}
		}
	}
}

// startLossNotice starts the notice for the lost total lost reads; the
// returned func stops it and returns once lost is no longer called.
func startLossNotice(w io.Writer, interval time.Duration, lost func() (uint64, error)) (stop func()) {
	n := &lossNotice{w: w, interval: interval}
	ticker := time.NewTicker(interval)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		n.run(lost, ticker.C, done)
	})
	return func() {
		ticker.Stop()
		close(done)
		wg.Wait()
	}
}
