// Package daemon is sfwatch's long-running observer: it loads and attaches
// the daemon's BPF programs once, watches any number of cgroup v2 subtrees,
// names the kernel's per-group rows by path, keeps totals per path that go
// on across a group's removal and re-creation, and exports them.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/ringreader"
)

// Defaults of Config.
const (
	DefaultRetention = 10 * time.Minute
	// tick is how often rows are named and removed groups' rows are
	// given back; group events wake the loop at once.
	tick = time.Second
	// rowGrace is how long a removed group's row stays readable before it
	// is given back: a program that looked the row up just before the
	// group's removal adds to it within microseconds.
	rowGrace = 2 * time.Second
	// recheckEvery is how often every named row's group is looked up in
	// the file system, in case a removal's event was lost.
	recheckEvery = 30 * time.Second
)

// Other and Unknown are the paths of the totals no group has: the calls
// counted past Config.MaxGroups, and the rows whose group could not be
// named (its creation event lost and the group gone before it was looked
// up).
const (
	Other   = "_other"
	Unknown = "_unknown"
)

// Config is what the daemon watches and how.
type Config struct {
	Watch      []string      // subtrees: absolute, or relative to the cgroup2 mount
	GroupDepth int           // count at this depth below a watched group; 0: each leaf
	MaxGroups  int           // groups with totals of their own; 0: loader.DefaultMaxGroups
	Retention  time.Duration // how long a removed path's totals are kept; 0: DefaultRetention
	Log        io.Writer     // notable changes, one line each; nil: none
	// Events, when set, gets every counted call's event (one in
	// SampleEvery) with its group's path, but a client run's (which go
	// to the run's ring); nil: totals only, and the programs are verified
	// without that event path.
	Events      EventSink
	RingBufSize int    // with Events: the ring buffer's size; 0: loader.DefaultRingBufSize
	SampleEvery uint32 // with Events: one event per N calls; 0 or 1: every call
}

// Totals is one path's totals: the slots of a kernel row (loader.Row*),
// summed over every group that had the path.
type Totals [loader.RowSize]uint64

// Calls is the number of calls.
func (t *Totals) Calls() uint64 { return t[loader.SfwatchCounterCOUNTER_CALLS] }

// Get returns one counter.
func (t *Totals) Get(c loader.SfwatchCounter) uint64 { return t[c] }

// Errno returns the failed calls with errno e (0: those past the table).
func (t *Totals) Errno(e syscall.Errno) uint64 {
	if int(e) >= loader.RowErrnos {
		return 0
	}
	return t[loader.RowErrno+int(e)]
}

// add sums a row's totals into t: not its id, nor a client run's sampling
// slots, which are no totals.
func (t *Totals) add(row []uint64) {
	for i, v := range row {
		if i != loader.RowID && i != loader.RowSampleEvery && i != loader.RowSampleTick {
			t[i] += v
		}
	}
}

// group is one path's state.
type group struct {
	path                string
	retired             Totals            // rows given back
	rows                map[uint32]uint64 // live rows: row -> group id
	goneAt              time.Time         // zero while the path exists
	lastOK              uint64            // see okCalls
	podUID, containerID string
}

// rowState is a row that the daemon has named.
type rowState struct {
	id       uint64
	g        *group
	forgotAt time.Time // the group was removed: give the row back at forgotAt+rowGrace
}

// watch is one watched path.
type watch struct {
	rel   string // below the mount: "/system.slice"
	id    uint64 // 0 while the path does not exist
	level uint32
}

// Daemon is the running observer.
type Daemon struct {
	bpf    *loader.Daemon
	events *ringreader.Reader // group creations and removals
	calls  *ringreader.Reader // the calls' events (Config.Events), or nil
	sink   EventSink
	mount  string
	depth  uint32
	keep   time.Duration
	log    io.Writer

	mu       sync.Mutex
	watches  []*watch
	runs     *watch            // the parent of the runs' groups (WatchRuns), or nil
	claimed  map[uint32]bool   // the runs' rows: never named
	attached map[uint64]*watch // groups root's clients attach to, by id
	names    map[uint64]string // group id -> path, for groups under a watched path
	rows     map[uint32]*rowState
	rowOf    map[uint64]uint32 // group id -> its row, while named
	groups   map[string]*group
	buf      []uint64 // the last read of every row
	ids      []uint64 // the id of every row, as last read
	lost     uint64   // group events lost, as last seen
	checked  time.Time
	other    Totals // row 0, as last read
	otherOK  uint64 // okCalls of Other
	// violations counts, by path, the events that broke a rule
	// (Config.Events).
	violations map[string]uint64
	delivered  atomic.Uint64 // events handed to sink

	callsOnce sync.Once
	callsDone chan error // consumeCalls' end
	callsErr  error
	stop      chan struct{}
	done      chan struct{}
}

// CheckWatch says why path cannot be watched, or nil; a path that does not
// exist yet is fine. It returns the path below the cgroup2 mount.
func CheckWatch(mount, path string) (string, error) {
	rel, err := relPath(mount, path)
	if err != nil {
		return "", fmt.Errorf("--watch %s: %w", path, err)
	}
	fi, err := os.Stat(filepath.Join(mount, rel))
	if errors.Is(err, fs.ErrNotExist) && filepath.IsAbs(path) && !strings.HasPrefix(path, mount+"/") {
		// Not below the mount, but there in the file system: a cgroup
		// v1 hierarchy, say, not a group to come.
		if _, serr := os.Stat(path); serr == nil {
			return "", fmt.Errorf("--watch %s: is outside the cgroup2 mount %s; give a path below it, or relative to it", path, mount)
		}
	}
	if err == nil && !fi.IsDir() {
		return "", fmt.Errorf("--watch %s: %s is not a cgroup (a directory of the cgroup2 mount)", path, filepath.Join(mount, rel))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("--watch %s: %w", path, err)
	}
	return rel, nil
}

// relPath is path below the cgroup2 mount, "/" or "/a/b", as
// internal/cgroup.Open reads it: absolute under the mount, or relative to
// it (/proc/PID/cgroup's form), never out of it with "..".
func relPath(mount, path string) (string, error) {
	if path == "" {
		return "", errors.New("empty path")
	}
	if r, err := filepath.Rel(mount, path); filepath.IsAbs(path) && err == nil && filepath.IsLocal(r) {
		return "/" + r, nil
	}
	if path == mount {
		return "/", nil
	}
	outside := fmt.Errorf("leaves the cgroup2 mount %s; give a path below it", mount)
	if strings.HasPrefix(path, mount+"/") {
		return "", outside
	}
	rel := filepath.Join(".", path)
	if rel == "." {
		return "/", nil
	}
	if !filepath.IsLocal(rel) {
		return "", outside
	}
	return "/" + rel, nil
}

func level(rel string) uint32 {
	if rel == "/" {
		return 0
	}
	return uint32(strings.Count(rel, "/"))
}

// Start loads and attaches the programs, then watches cfg.Watch.
func Start(mount string, cfg Config) (*Daemon, error) {
	if cfg.MaxGroups == 0 {
		cfg.MaxGroups = loader.DefaultMaxGroups
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.GroupDepth < 0 || cfg.GroupDepth > 31 {
		return nil, fmt.Errorf("group depth %d: want 0 to 31", cfg.GroupDepth)
	}
	bpf, err := loader.OpenDaemon(loader.DaemonConfig{
		MaxGroups:   cfg.MaxGroups,
		Events:      cfg.Events != nil,
		RingBufSize: cfg.RingBufSize,
		SampleEvery: cfg.SampleEvery,
	})
	if err != nil {
		return nil, err
	}
	events, err := ringreader.New(bpf.GroupEvents())
	if err != nil {
		bpf.Close()
		return nil, err
	}
	d := &Daemon{
		bpf:      bpf,
		events:   events,
		mount:    mount,
		depth:    uint32(cfg.GroupDepth),
		keep:     cfg.Retention,
		log:      cfg.Log,
		names:    make(map[uint64]string),
		rows:     make(map[uint32]*rowState),
		rowOf:    make(map[uint64]uint32),
		claimed:  make(map[uint32]bool),
		attached: make(map[uint64]*watch),
		groups:   make(map[string]*group),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ids:      make([]uint64, cfg.MaxGroups+1),

		violations: make(map[string]uint64),
		sink:       cfg.Events,
		callsDone:  make(chan error, 1),
	}
	if cfg.Events != nil {
		if d.calls, err = ringreader.New(bpf.CallEvents()); err != nil {
			events.Close()
			bpf.Close()
			return nil, err
		}
	}
	if err := d.SetWatch(cfg.Watch); err != nil {
		d.closeReaders()
		bpf.Close()
		return nil, err
	}
	if d.calls != nil {
		go func() { d.callsDone <- d.consumeCalls() }()
	}
	go d.loop()
	return d, nil
}

// SetWatch makes paths the watch list (SIGHUP). Groups of a subtree no
// longer watched keep their totals; their new calls are not counted.
func (d *Daemon) SetWatch(paths []string) error {
	var rels []string
	for _, p := range paths {
		rel, err := CheckWatch(d.mount, p)
		if err != nil {
			return err
		}
		if !slices.Contains(rels, rel) {
			rels = append(rels, rel)
		}
	}
	if len(rels) > loader.MaxWatches {
		return fmt.Errorf("watching %d paths: at most %d", len(rels), loader.MaxWatches)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var keep []*watch
	for _, w := range d.watches {
		if slices.Contains(rels, w.rel) {
			keep = append(keep, w)
			continue
		}
		fmt.Fprintf(d.log, "sfwatch: no longer watching %s\n", w.rel)
	}
	d.watches = keep
	if err := d.pushWatches(); err != nil {
		return err
	}
	for _, rel := range rels {
		if slices.ContainsFunc(d.watches, func(w *watch) bool { return w.rel == rel }) {
			continue
		}
		w := &watch{rel: rel, level: level(rel)}
		d.watches = append(d.watches, w)
		if err := d.activate(w); err != nil {
			return err
		}
	}
	return nil
}

// activate watches w if its path exists, and names the groups below it.
// The programs are attached: a group created during the walk is named by
// its mkdir event, if the walk misses it.
func (d *Daemon) activate(w *watch) error {
	id, err := inode(filepath.Join(d.mount, w.rel))
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(d.log, "sfwatch: %s does not exist yet: watched from the moment it is created\n", w.rel)
		return nil
	}
	if err != nil {
		return fmt.Errorf("watching %s: %w", w.rel, err)
	}
	w.id = id
	if err := d.pushWatches(); err != nil {
		w.id = 0
		return err
	}
	d.walk(w.rel)
	fmt.Fprintf(d.log, "sfwatch: watching %s (cgroup id %d)\n", w.rel, id)
	return nil
}

// pushWatches hands the watched paths that exist to the programs.
func (d *Daemon) pushWatches() error {
	ws := d.clientWatches()
	for _, w := range d.watches {
		if w.id != 0 {
			ws = append(ws, loader.Watch{ID: w.id, Level: w.level, Depth: d.depth})
		}
	}
	return d.bpf.SetWatches(ws)
}

func inode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", path)
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// walk names every group below rel (and rel itself).
func (d *Daemon) walk(rel string) {
	root := filepath.Join(d.mount, rel)
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil // removed meanwhile: its rmdir event says so
		}
		if fi, err := e.Info(); err == nil {
			r, _ := filepath.Rel(d.mount, p)
			d.names[fi.Sys().(*syscall.Stat_t).Ino] = filepath.Join("/", r)
		}
		return nil
	})
}

// watchedPath tells whether rel is at or below a watched path (existing or
// not yet).
func (d *Daemon) watchedPath(rel string) bool {
	for _, w := range d.watches {
		if rel == w.rel || w.rel == "/" || strings.HasPrefix(rel, w.rel+"/") {
			return true
		}
	}
	return false
}

func (d *Daemon) loop() {
	defer close(d.done)
	next := time.Now().Add(tick)
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		d.events.SetDeadline(next)
		err := d.events.Wait()
		d.mu.Lock()
		if derr := d.drainGroups(); derr != nil {
			fmt.Fprintf(d.log, "sfwatch: %v\n", derr)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || time.Now().After(next) {
			if herr := d.harvest(time.Now()); herr != nil {
				fmt.Fprintf(d.log, "sfwatch: %v\n", herr)
			}
			next = time.Now().Add(tick)
		}
		d.mu.Unlock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			select {
			case <-d.stop:
				return
			case <-time.After(tick): // an unexpected error: do not spin
			}
		}
	}
}

// drainGroups handles every group event committed so far. Under mu.
func (d *Daemon) drainGroups() error {
	var e loader.DaemonGroupEvent
	_, err := d.events.Drain(func(raw []byte) error {
		if err := loader.DecodeGroupEvent(raw, &e); err != nil {
			return err
		}
		d.groupEvent(&e)
		return nil
	})
	return err
}

// groupEvent handles a group's creation or removal. Under mu.
func (d *Daemon) groupEvent(e *loader.DaemonGroupEvent) {
	path := cString(e.Path[:min(int(e.Len), len(e.Path))])
	switch loader.DaemonGroupEventKind(e.Kind) {
	case loader.DaemonGroupEventKindGROUP_MKDIR:
		for _, w := range d.watches {
			if w.id == 0 && w.rel == path {
				// A path watched before it existed: from here on.
				w.id = e.Id
				if err := d.pushWatches(); err != nil {
					w.id = 0
					fmt.Fprintf(d.log, "sfwatch: %v\n", err)
					continue
				}
				fmt.Fprintf(d.log, "sfwatch: %s was created: watching it (cgroup id %d)\n", path, e.Id)
			}
		}
		if d.watchedPath(path) {
			d.names[e.Id] = path
			if g := d.groups[path]; g != nil {
				g.goneAt = time.Time{}
			}
		}
	case loader.DaemonGroupEventKindGROUP_RMDIR:
		for _, w := range d.watches {
			if w.id == e.Id {
				// Watched again if the path comes back.
				w.id = 0
				if err := d.pushWatches(); err != nil {
					fmt.Fprintf(d.log, "sfwatch: %v\n", err)
				}
				fmt.Fprintf(d.log, "sfwatch: %s was removed: watched again from the moment it is created\n", w.rel)
			}
		}
		d.removed(e.Id, time.Now())
	}
}

// removed starts giving back the row of group id, which is gone.
func (d *Daemon) removed(id uint64, now time.Time) {
	row, ok := d.rowOf[id]
	if !ok {
		// Its row, if it has one, may not be named yet: name it now,
		// while its name is known (every call of the group came before
		// its removal, so its row is taken by now).
		if err := d.scan(); err != nil {
			fmt.Fprintf(d.log, "sfwatch: %v\n", err)
		}
		row, ok = d.rowOf[id]
	}
	if !ok {
		// Without a row, the name is no longer needed; with one, it
		// is kept until the row is given back.
		delete(d.names, id)
		return
	}
	r := d.rows[row]
	if !r.forgotAt.IsZero() {
		return
	}
	if err := d.bpf.Forget(id); err != nil {
		fmt.Fprintf(d.log, "sfwatch: %v\n", err)
	}
	r.forgotAt = now
	if d.lastRow(r.g, id) {
		r.g.goneAt = now
	}
}

// lastRow: every row of g but the one of id is already forgotten.
func (d *Daemon) lastRow(g *group, id uint64) bool {
	for row, rid := range g.rows {
		if rid != id && d.rows[row].forgotAt.IsZero() {
			return false
		}
	}
	return true
}

func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// harvest reads the rows, names new ones, gives back those of removed
// groups, and drops paths gone longer than the retention. Under mu.
func (d *Daemon) harvest(now time.Time) error {
	if err := d.read(); err != nil {
		return err
	}
	c, err := d.bpf.Counters()
	if err != nil {
		return err
	}
	lost := c[loader.DaemonDaemonCounterDAEMON_GROUPS_LOST]
	if lost != d.lost || now.Sub(d.checked) >= recheckEvery {
		// An event may be missing: ask the file system.
		d.lost, d.checked = lost, now
		d.recheck(now)
	}
	for row, r := range d.rows {
		if r.forgotAt.IsZero() || now.Sub(r.forgotAt) < rowGrace {
			continue
		}
		r.g.retired.add(d.row(row))
		d.unname(row)
		delete(d.names, r.id)
		if err := d.bpf.FreeRow(row); err != nil {
			return err
		}
	}
	for path, g := range d.groups {
		if len(g.rows) == 0 && !g.goneAt.IsZero() && now.Sub(g.goneAt) >= d.keep {
			delete(d.groups, path)
			delete(d.violations, path)
		}
	}
	return nil
}

// recheck treats every named row whose group is no longer at its path as
// removed.
func (d *Daemon) recheck(now time.Time) {
	for _, r := range d.rows {
		if !r.forgotAt.IsZero() || r.g.path == Unknown {
			continue
		}
		if id, err := inode(filepath.Join(d.mount, r.g.path)); err != nil || id != r.id {
			d.removed(r.id, now)
		}
	}
}

// read reads every row and names the rows not named yet. Under mu.
func (d *Daemon) read() error {
	var err error
	if d.buf, err = d.bpf.Rows(d.buf); err != nil {
		return err
	}
	copy(d.other[:], d.row(0))
	for row := range d.ids {
		d.ids[row] = d.buf[row*loader.RowSize+loader.RowID]
	}
	d.nameRows()
	return nil
}

// scan names the rows not named yet, reading only their ids. Under mu.
func (d *Daemon) scan() error {
	var err error
	if d.ids, err = d.bpf.RowIDs(d.ids); err != nil {
		return err
	}
	d.nameRows()
	return nil
}

// nameRows names the rows of d.ids not named yet.
func (d *Daemon) nameRows() {
	for row := 1; row < len(d.ids); row++ {
		if d.claimed[uint32(row)] {
			continue
		}
		id := d.ids[row]
		r := d.rows[uint32(row)]
		if r != nil && r.id == id {
			continue
		}
		if r != nil {
			// A row the kernel took and gave back at once (two
			// CPUs' first calls of one group): it counted nothing.
			d.unname(uint32(row))
		}
		if id != 0 {
			d.name(uint32(row), id)
		}
	}
}

// unname forgets what row was.
func (d *Daemon) unname(row uint32) {
	if r := d.rows[row]; r != nil {
		delete(r.g.rows, row)
		delete(d.rowOf, r.id)
		delete(d.rows, row)
	}
}

// name gives a new row its path's group.
func (d *Daemon) name(row uint32, id uint64) {
	path, ok := d.names[id]
	if !ok {
		path = d.lookUp(id)
	}
	g := d.groups[path]
	if g == nil {
		g = &group{path: path, rows: make(map[uint32]uint64)}
		g.podUID, g.containerID = kubeLabels(path)
		d.groups[path] = g
	}
	g.rows[row] = id
	g.goneAt = time.Time{}
	d.rows[row] = &rowState{id: id, g: g}
	d.rowOf[id] = row
}

// lookUp names a group whose creation event was lost, by walking the
// watched subtrees; Unknown when it is gone.
func (d *Daemon) lookUp(id uint64) string {
	for _, w := range d.watches {
		if w.id != 0 {
			d.walk(w.rel)
		}
	}
	if path, ok := d.names[id]; ok {
		return path
	}
	return Unknown
}

// row is the last read of one row.
func (d *Daemon) row(row uint32) []uint64 {
	return d.buf[int(row)*loader.RowSize : int(row+1)*loader.RowSize]
}

// Snapshot reads the kernel's rows and returns every path's totals, with
// Other's. Exact: what a removed group counted is in its path's totals.
func (d *Daemon) Snapshot() (map[string]Totals, error) {
	all, err := d.snapshot(false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Totals, len(all))
	for _, g := range all {
		out[g.path] = g.totals
	}
	return out, nil
}

// groupTotals is one path's totals at a scrape.
type groupTotals struct {
	path, podUID, containerID string
	totals                    Totals
	ok                        uint64 // see okCalls
	violations                uint64 // events that broke a rule (Config.Events)
}

// snapshot is Snapshot with labels; scrape says to advance okCalls.
func (d *Daemon) snapshot(scrape bool) ([]groupTotals, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.read(); err != nil {
		return nil, err
	}
	out := make([]groupTotals, 0, len(d.groups)+1)
	for path, g := range d.groups {
		gt := groupTotals{path: path, podUID: g.podUID, containerID: g.containerID, totals: g.retired, violations: d.violations[path]}
		for row := range g.rows {
			gt.totals.add(d.row(row))
		}
		gt.ok = okCalls(&gt.totals, &g.lastOK, scrape)
		out = append(out, gt)
	}
	other := groupTotals{path: Other, violations: d.violations[Other]}
	other.totals.add(d.other[:])
	other.ok = okCalls(&other.totals, &d.otherOK, scrape)
	return append(out, other), nil
}

// okCalls is the row's counters.Totals.OK, never reported lower than at an
// earlier scrape (a counter that goes down reads as a reset).
func okCalls(t *Totals, last *uint64, scrape bool) uint64 {
	kernel := counters.TotalsOf((*[loader.SfwatchCounterCOUNTER_MAX]uint64)(t[:loader.SfwatchCounterCOUNTER_MAX]))
	ok := kernel.OK()
	if !scrape {
		return ok
	}
	*last = max(*last, ok)
	return *last
}

// Groups is the number of paths with totals (sfwatch_watched_groups).
func (d *Daemon) Groups() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.groups)
}

// Counters are the daemon's own counters.
func (d *Daemon) Counters() (loader.DaemonCounters, error) { return d.bpf.Counters() }

// Skipped is the programs' skips (see loader.Snapshot.Skipped).
func (d *Daemon) Skipped() (map[string]uint64, error) { return d.bpf.Skipped() }

// RunStats is each program's run count and run time (loader.Daemon.RunStats).
func (d *Daemon) RunStats() (map[string]*ebpf.ProgramStats, error) { return d.bpf.RunStats() }

// Events says whether the daemon reads the calls' events (Config.Events).
func (d *Daemon) Events() bool { return d.calls != nil }

// Violations returns, by path, the events that broke a rule.
func (d *Daemon) Violations() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.violations)
}

// Detach stops counting: the totals stay readable. With Config.Events,
// every event the programs emitted has reached the sink when it returns.
func (d *Daemon) Detach() error {
	d.mu.Lock()
	err := d.bpf.Detach()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.stopCalls()
}

// Close stops the loop and frees the programs and maps. Idempotent.
func (d *Daemon) Close() error {
	select {
	case <-d.stop:
		return nil
	default:
	}
	close(d.stop)
	d.events.Flush()
	<-d.done
	d.stopCalls()
	return errors.Join(d.closeReaders(), d.bpf.Close())
}

func (d *Daemon) closeReaders() error {
	err := d.events.Close()
	if d.calls != nil {
		err = errors.Join(err, d.calls.Close())
	}
	return err
}
