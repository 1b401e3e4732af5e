package daemon

import (
	"encoding/binary"
	"fmt"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/session"
)

// EventSink receives the calls' events (--events), from one goroutine.
type EventSink interface {
	// Event is one counted call of the group at path, validated as run
	// validates its events.
	Event(path string, e *events.Event, v events.Verdict)
	// Idle: the reader has caught up; flush buffered output.
	Idle()
}

// callEventSize is struct call_event: sfwatch's event, then the group's id.
const callEventSize = events.RecordSize + 8

// consumeCalls reads the calls' events until the final flush, as run's
// session does.
func (d *Daemon) consumeCalls() error {
	var ev events.Event
	// Group ids are never reused while the machine runs: a name, once
	// known, stays right. Bounded: cleared when it grows past the rows.
	paths := make(map[uint64]string)
	limit := 2 * (d.bpf.MaxGroups() + 1)
	handle := func(raw []byte) error {
		if len(raw) != callEventSize {
			return fmt.Errorf("decoding call event: record of %d bytes, want %d", len(raw), callEventSize)
		}
		if err := events.Decode(raw[:events.RecordSize], &ev); err != nil {
			return err
		}
		id := binary.NativeEndian.Uint64(raw[events.RecordSize:])
		path, ok := paths[id]
		if !ok {
			path = d.pathOf(id)
			if path != Unknown {
				if len(paths) >= limit {
					clear(paths)
				}
				paths[id] = path
			}
		}
		v := events.Validate(&ev)
		d.delivered.Add(1)
		if v.Violations != 0 {
			d.mu.Lock()
			d.violations[path]++
			d.mu.Unlock()
		}
		d.sink.Event(path, &ev, v)
		return nil
	}
	return d.calls.Consume(session.DrainInterval, handle, d.sink.Idle)
}

// pathOf names the group of id, as its row is named: the group events
// committed so far come first (a group's creation is committed before any
// of its calls).
func (d *Daemon) pathOf(id uint64) string {
	if id == 0 {
		return Other
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if path, ok := d.names[id]; ok {
		return path
	}
	if err := d.drainGroups(); err != nil {
		fmt.Fprintf(d.log, "sfwatch: %v\n", err)
	}
	if path, ok := d.names[id]; ok {
		return path
	}
	if row, ok := d.rowOf[id]; ok {
		return d.rows[row].g.path
	}
	return d.lookUp(id)
}

// stopCalls ends the events' reader once the programs are detached: what
// they emitted is read first. Idempotent.
func (d *Daemon) stopCalls() error {
	if d.calls == nil {
		return nil
	}
	d.callsOnce.Do(func() {
		if err := d.calls.Flush(); err != nil {
			d.callsErr = err
			return
		}
		d.callsErr = <-d.callsDone
	})
	return d.callsErr
}

// EventsLost is the events the kernel dropped, every group's: the ring
// buffer was full.
func (d *Daemon) EventsLost() (uint64, error) {
	all, err := d.Snapshot()
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, t := range all {
		n += t.Get(loader.SfwatchCounterCOUNTER_LOST)
	}
	return n, nil
}

// Delivered is the events handed to Config.Events so far.
func (d *Daemon) Delivered() uint64 { return d.delivered.Load() }

// Instructions counts the instructions of each loaded program
// (loader.Daemon.Instructions).
func (d *Daemon) Instructions() (map[string]int, error) { return d.bpf.Instructions() }
