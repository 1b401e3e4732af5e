package daemon

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// Runs: the groups of the daemon's clients' runs live below one parent
// group, watched before every other subtree (a run's calls are its own,
// even under a watched path) at depth 1: each run's group, and whatever
// its command creates below it, is counted in the run's row. The daemon
// claims that row when it creates the group, so it is never named,
// exported or retained as a watched group's: it is the run's, until the
// run ends.
//
// A run's row comes with a ring buffer for its events, which the client
// maps. Setting a row's ring waits for an RCU grace period (8 to 15 ms
// here), so a row and its ring are parked when a run ends, for the next
// run of the same client uid (the server's pool).

// WatchRuns makes parent the parent of the runs' groups.
func (d *Daemon) WatchRuns(parent *cgroup.Group) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runs = &watch{rel: parent.Rel, id: parent.ID, level: parent.Level}
	return d.pushWatches()
}

// Lane is a row and its ring buffer: a run's, or parked between runs.
type Lane struct {
	d    *Daemon
	row  uint32
	ring *ebpf.Map
}

// Ring is the lane's ring buffer, to hand to the client.
func (l *Lane) Ring() *ebpf.Map { return l.ring }

// Size is the ring buffer's size in bytes.
func (l *Lane) Size() int { return int(l.ring.MaxEntries()) }

// NewLane claims a free row with a new ring of size bytes.
func (d *Daemon) NewLane(size int) (*Lane, error) {
	ring, err := loader.NewRunRing(size)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	row, err := d.bpf.TakeRow()
	if err == nil {
		d.claimed[row] = true
	}
	d.mu.Unlock()
	if err != nil {
		ring.Close()
		return nil, err
	}
	// Outside mu: the grace period does not hold the scrapes up.
	l := &Lane{d: d, row: row, ring: ring}
	if err := d.bpf.SetRunRing(row, ring); err != nil {
		return nil, errors.Join(err, l.Free())
	}
	return l, nil
}

// Free gives the row back and closes the ring.
func (l *Lane) Free() error {
	d := l.d
	err := d.bpf.ClearRunRing(l.row)
	d.mu.Lock()
	if err == nil {
		err = d.bpf.FreeRow(l.row)
	}
	delete(d.claimed, l.row)
	d.mu.Unlock()
	return errors.Join(err, l.ring.Close())
}

// Run is one client's run: its group counted in a lane. Or an attach: a
// group that exists, root's client's to watch, its whole subtree counted
// in the lane while its watch is on.
type Run struct {
	lane    *Lane
	id      uint64            // the group's cgroup id
	skipped map[string]uint64 // the programs' skips when it began
	attach  bool
}

// ErrOverlap is wrapped by BeginAttach's error when the group is, or is
// in, or holds, a subtree the daemon already counts elsewhere: its calls
// cannot be counted twice.
var ErrOverlap = errors.New("overlaps")

// within says whether rel is at or below parent.
func within(rel, parent string) bool {
	return rel == parent || parent == "/" || strings.HasPrefix(rel, parent+"/")
}

// BeginAttach counts every call of group's subtree in lane, with one
// event in sampleEvery sent to its ring, from now until Stop.
func (d *Daemon) BeginAttach(group *cgroup.Group, lane *Lane, sampleEvery uint32) (*Run, error) {
	skipped, err := d.ready(lane)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	others := slices.Clone(d.watches)
	if d.runs != nil {
		others = append(others, d.runs)
	}
	for _, w := range d.attached {
		others = append(others, w)
	}
	for _, w := range others {
		if within(group.Rel, w.rel) || within(w.rel, group.Rel) {
			return nil, fmt.Errorf("cgroup %s %w %s, which the daemon counts already", group.Rel, ErrOverlap, w.rel)
		}
	}
	if err := d.bpf.ReuseRow(lane.row, group.ID, sampleEvery); err != nil {
		return nil, err
	}
	d.attached[group.ID] = &watch{rel: group.Rel, id: group.ID, level: group.Level}
	if err := d.pushWatches(); err != nil {
		delete(d.attached, group.ID)
		d.bpf.Forget(group.ID)
		return nil, err
	}
	return &Run{lane: lane, id: group.ID, skipped: skipped, attach: true}, nil
}

// Stop stops counting an attach's calls: its row then holds its final
// totals, until End. A run's group is killed instead; Stop does nothing.
func (r *Run) Stop() error {
	if !r.attach {
		return nil
	}
	d := r.lane.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.attached[r.id]; !ok {
		return nil
	}
	delete(d.attached, r.id)
	return d.pushWatches()
}

// BeginRun counts the calls of group (a child of the WatchRuns parent,
// still empty) in lane, with one event in sampleEvery sent to its ring,
// from now until End. Whatever the ring held is skipped.
func (d *Daemon) BeginRun(group *cgroup.Group, lane *Lane, sampleEvery uint32) (*Run, error) {
	skipped, err := d.ready(lane)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.bpf.ReuseRow(lane.row, group.ID, sampleEvery); err != nil {
		return nil, err
	}
	return &Run{lane: lane, id: group.ID, skipped: skipped}, nil
}

// ready readies lane (zeroed when it was freed or parked) for its next
// group: whatever its ring held is skipped. It returns the programs' skips
// so far, from which the run counts its own.
func (d *Daemon) ready(lane *Lane) (map[string]uint64, error) {
	skipped, err := d.bpf.Skipped()
	if err != nil {
		return nil, err
	}
	if err := loader.SkipRing(lane.ring); err != nil {
		return nil, err
	}
	return skipped, nil
}

// Row reads the run's row through memory into dst (loader.RowSize slots).
func (r *Run) Row(dst []uint64) ([]uint64, error) { return r.lane.d.bpf.Row(r.lane.row, dst) }

// Skipped is, by program, the times the kernel skipped one of the
// daemon's programs since the run began (for any thread: a skip cannot be
// tied to a group).
func (r *Run) Skipped() (map[string]uint64, error) {
	now, err := r.lane.d.bpf.Skipped()
	if err != nil {
		return nil, err
	}
	out := maps.Clone(now)
	for p, n := range now {
		out[p] = n - r.skipped[p]
	}
	return out, nil
}

// End stops counting the run's group and returns its lane, parked. A
// run's group must be empty (killed): no thread of it can still be
// counted.
func (r *Run) End() (*Lane, error) {
	if err := r.Stop(); err != nil {
		return r.lane, err
	}
	d := r.lane.d
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.names, r.id)
	if err := d.bpf.Forget(r.id); err != nil {
		return r.lane, err
	}
	if err := d.bpf.ParkRow(r.lane.row); err != nil {
		return r.lane, fmt.Errorf("ending run of cgroup %d: %w", r.id, err)
	}
	return r.lane, nil
}

// clientWatches are the runs' parent and the attached groups, for the
// programs, first: a client's calls are its own.
func (d *Daemon) clientWatches() []loader.Watch {
	var ws []loader.Watch
	if d.runs != nil {
		ws = append(ws, loader.Watch{ID: d.runs.id, Level: d.runs.level, Depth: 1, First: true})
	}
	for _, w := range d.attached {
		ws = append(ws, loader.Watch{ID: w.id, Level: w.level, Depth: loader.DepthSubtree, First: true})
	}
	return ws
}

// Lanes is the number of rows the runs hold (running or parked), and
// GroupRows the entries of the kernel's group -> row map: for tests and
// diagnostics.
func (d *Daemon) Lanes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.claimed)
}

// GroupRows counts the entries of the kernel's group -> row map (through
// the bpf syscall: not for scrapes).
func (d *Daemon) GroupRows() (int, error) { return d.bpf.GroupRows() }
