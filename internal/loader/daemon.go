package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The daemon's rows (bpf/daemon.c): ROW_SIZE slots each, the enum counter
// slots first, then the group's id, the latency buckets, the errnos and a
// client run's sampling (RowSampleEvery, RowSampleTick: not totals).
const (
	RowSize           = int(DaemonRowSlotROW_SIZE)
	RowID             = int(DaemonRowSlotROW_ID)
	RowLatency        = int(DaemonRowSlotROW_LATENCY)
	RowLatencyBuckets = int(DaemonRowSlotROW_ERRNO - DaemonRowSlotROW_LATENCY)
	RowErrno          = int(DaemonRowSlotROW_ERRNO)
	RowErrnos         = int(DaemonRowSlotROW_SAMPLE_EVERY - DaemonRowSlotROW_ERRNO) // slot 0: errnos past the table
	RowSampleEvery    = int(DaemonRowSlotROW_SAMPLE_EVERY)                          // a client run's one event in N; 0: not a run
	RowSampleTick     = int(DaemonRowSlotROW_SAMPLE_TICK)                           // a client run's position in its sampling cycle
)

// ErrNoFreeRow is ClaimRow's error when every row is taken.
var ErrNoFreeRow = errors.New("no free row")

// DefaultMaxGroups and MaxMaxGroups bound the daemon's rows: each costs
// 1.5 KiB of kernel memory, so the largest table is 96 MiB.
const (
	DefaultMaxGroups = 1024
	MaxMaxGroups     = 65536
)

// Daemon is the daemon's BPF side, loaded and attached once: exact totals
// per group for every watched subtree. Nothing is pinned: when the process
// ends, however it ends, the kernel detaches and frees everything.
type Daemon struct {
	coll      *ebpf.Collection
	objs      DaemonMaps
	links     []link.Link
	kretprobe link.Link
	progs     []program
	rows      *ebpf.Memory
	rowBuf    []byte
	counters  *ebpf.Memory
	sets      [2]*ebpf.Variable // watch_set_0, watch_set_1
	activeVar *ebpf.Variable    // watch_active
	active    int
	maxGroups int
}

// daemonPrograms are the daemon's programs, in attach order: the group
// events first (a group created from then on is named before its first
// call), then the call programs as run attaches them, without the follow
// programs.
func daemonPrograms() []program {
	progs := []program{
		{"cgroup_mkdir", tracepoint, "cgroup", "cgroup_mkdir", false},
		{"cgroup_rmdir", tracepoint, "cgroup", "cgroup_rmdir", false},
	}
	for _, p := range programs() {
		if !p.follow {
			progs = append(progs, p)
		}
	}
	return progs
}

// ValidateMaxGroups says why n cannot be --max-groups, or nil.
func ValidateMaxGroups(n int) error {
	if n < 1 || n > MaxMaxGroups {
		return fmt.Errorf("max groups %d: want 1 to %d (each costs 1.5 KiB of kernel memory)", n, MaxMaxGroups)
	}
	return nil
}

// DaemonConfig is every knob of the daemon's kernel side, set before load.
type DaemonConfig struct {
	MaxGroups int // groups with a row of their own
	// Events emits each counted call's event in CallEvents (but a
	// client run's, which go to its own ring: SetRunRing). Without it
	// the programs are verified with the CallEvents path dropped, and
	// CallEvents is one page.
	Events      bool
	RingBufSize int    // with Events: CallEvents' size; 0 = DefaultRingBufSize
	SampleEvery uint32 // with Events: one event per N calls; 0 or 1 = every call
}

// OpenDaemon loads the daemon's programs for cfg and attaches them.
// Nothing is watched until Watch.
func OpenDaemon(cfg DaemonConfig) (*Daemon, error) {
	maxGroups := cfg.MaxGroups
	if err := ValidateMaxGroups(maxGroups); err != nil {
		return nil, err
	}
	if cfg.RingBufSize == 0 {
		cfg.RingBufSize = DefaultRingBufSize
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = 1
	}
	if !cfg.Events {
		cfg.RingBufSize = os.Getpagesize()
	}
	if err := ValidateRingBufSize(cfg.RingBufSize); err != nil {
		return nil, err
	}
	if err := prepareKernel(); err != nil {
		return nil, err
	}
	spec, err := LoadDaemon()
	if err != nil {
		return nil, fmt.Errorf("loading BPF spec: %w", err)
	}
	n := uint32(maxGroups)
	spec.Maps[DaemonMapGroupRows].MaxEntries = n
	spec.Maps[DaemonMapFreeRows].MaxEntries = n
	spec.Maps[DaemonMapRows].MaxEntries = (n + 1) * uint32(RowSize)
	spec.Maps[DaemonMapCallEvents].MaxEntries = uint32(cfg.RingBufSize)
	// A ring for any row but 0, "_other", which is no run's.
	spec.Maps[DaemonMapRunRings].MaxEntries = n + 1
	var vars DaemonVariableSpecs
	if err := spec.Assign(&vars); err != nil {
		return nil, fmt.Errorf("loading BPF variables: %w", err)
	}
	var on uint32
	if cfg.Events {
		on = 1
	}
	for _, c := range []constant{
		{vars.EventsOn, on},
		{vars.SampleEvery, cfg.SampleEvery},
		// As run: wake the reader once an eighth of the buffer is unread.
		{vars.WakeupBytes, uint64(cfg.RingBufSize / 8)},
	} {
		if err := c.spec.Set(c.value); err != nil {
			return nil, fmt.Errorf("setting %s: %w", c.spec.Name, err)
		}
	}
	progs := daemonPrograms()
	for name := range spec.Programs {
		if !slices.ContainsFunc(progs, func(p program) bool { return p.name == name }) {
			delete(spec.Programs, name)
		}
	}
	d := &Daemon{progs: progs, maxGroups: maxGroups}
	if d.coll, err = newCollection(spec); err != nil {
		return nil, err
	}
	if err := d.open(); err != nil {
		d.Close()
		return nil, err
	}
	if d.links, d.kretprobe, err = attachAll(d.coll, progs); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// open maps what the daemon reads and fills the free rows.
func (d *Daemon) open() error {
	var err error
	if err = d.coll.Assign(&d.objs); err != nil {
		return fmt.Errorf("loading BPF maps: %w", err)
	}
	if d.rows, err = d.objs.Rows.Memory(); err != nil {
		return fmt.Errorf("mapping %s: %w", d.objs.Rows, err)
	}
	d.rowBuf = make([]byte, d.rows.Size())
	if d.counters, err = d.objs.DaemonCounters.Memory(); err != nil {
		return fmt.Errorf("mapping %s: %w", d.objs.DaemonCounters, err)
	}
	var vars DaemonVariables
	if err := d.coll.Assign(&vars); err != nil {
		return fmt.Errorf("loading BPF variables: %w", err)
	}
	d.sets = [2]*ebpf.Variable{vars.WatchSet0, vars.WatchSet1}
	d.activeVar = vars.WatchActive
	for row := uint32(1); row <= uint32(d.maxGroups); row++ {
		if err := d.objs.FreeRows.Update(nil, row, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("filling free rows: %w", err)
		}
	}
	return nil
}

// MaxGroups is how many groups get a row of their own.
func (d *Daemon) MaxGroups() int { return d.maxGroups }

// DepthSubtree is the Watch depth that counts every call of the subtree
// in the watched group's own row (DEPTH_SUBTREE): a client run's group,
// whose row ClaimRow took.
const DepthSubtree = ^uint32(0)

// Watch is one watched subtree: the group's id and level, and the depth
// below it at which groups are told apart (0: each thread's own group;
// DepthSubtree: none are).
type Watch struct {
	ID           uint64
	Level, Depth uint32
	// First puts the watch ahead of every watch that is not: the programs
	// count a call under the first watch that holds it, so a client run's
	// group below a watched subtree is counted in its run's row.
	First bool
}

// MaxWatches is how many subtrees can be watched at once (MAX_WATCHES).
const MaxWatches = len(DaemonWatchSet{}.W)

// SetWatches makes ws the watched subtrees, from the programs' next run
// on: it fills the set they do not read, then switches them to it. Calls
// from one daemon goroutine at a time.
func (d *Daemon) SetWatches(ws []Watch) error {
	if len(ws) > MaxWatches {
		return fmt.Errorf("watching %d subtrees: at most %d", len(ws), MaxWatches)
	}
	ws = slices.Clone(ws)
	// First ones first, then sorted by level: the programs look each
	// level's ancestor up once per run of equal levels.
	slices.SortStableFunc(ws, func(a, b Watch) int {
		if a.First != b.First {
			if a.First {
				return -1
			}
			return 1
		}
		if a.First {
			return 0
		}
		return int(a.Level) - int(b.Level)
	})
	var set DaemonWatchSet
	set.Count = uint32(len(ws))
	for i, w := range ws {
		set.W[i].Id, set.W[i].Level, set.W[i].Depth = w.ID, w.Level, w.Depth
	}
	next := 1 - d.active
	if err := d.sets[next].Set(set); err != nil {
		return fmt.Errorf("setting the watched subtrees: %w", err)
	}
	if err := d.activeVar.Set(uint32(next)); err != nil {
		return fmt.Errorf("setting the watched subtrees: %w", err)
	}
	d.active = next
	return nil
}

// Rows reads every row through memory (no syscall): rows[r*RowSize+slot].
// The slice is reused by the next call.
func (d *Daemon) Rows(rows []uint64) ([]uint64, error) {
	if _, err := d.rows.ReadAt(d.rowBuf, 0); err != nil {
		return rows, fmt.Errorf("reading group totals: %w", err)
	}
	rows = slices.Grow(rows[:0], len(d.rowBuf)/8)[:len(d.rowBuf)/8]
	for i := range rows {
		rows[i] = binary.NativeEndian.Uint64(d.rowBuf[i*8:])
	}
	return rows, nil
}

// Row reads row's RowSize slots into dst through memory (no syscall):
// a client run's totals, read as often as it asks.
func (d *Daemon) Row(row uint32, dst []uint64) ([]uint64, error) {
	if int(row) > d.maxGroups {
		return dst, fmt.Errorf("reading row %d: want 0 to %d", row, d.maxGroups)
	}
	var b [RowSize * 8]byte
	if _, err := d.rows.ReadAt(b[:], int64(row)*int64(RowSize)*8); err != nil {
		return dst, fmt.Errorf("reading row %d: %w", row, err)
	}
	dst = slices.Grow(dst[:0], RowSize)[:RowSize]
	for i := range dst {
		dst[i] = binary.NativeEndian.Uint64(b[i*8:])
	}
	return dst, nil
}

// RowIDs reads the id slot of every row, ids[r], through memory: which
// rows are taken, and by which group, without copying their totals.
func (d *Daemon) RowIDs(ids []uint64) ([]uint64, error) {
	ids = slices.Grow(ids[:0], d.maxGroups+1)[:d.maxGroups+1]
	var b [8]byte
	for r := range ids {
		if _, err := d.rows.ReadAt(b[:], int64(r*RowSize+RowID)*8); err != nil {
			return ids, fmt.Errorf("reading group ids: %w", err)
		}
		ids[r] = binary.NativeEndian.Uint64(b[:])
	}
	return ids, nil
}

// GroupRows counts the entries of the kernel's group -> row map (through
// the bpf syscall: for tests and diagnostics, not for scrapes).
func (d *Daemon) GroupRows() (int, error) {
	var (
		id  uint64
		row uint32
		n   int
	)
	it := d.objs.GroupRows.Iterate()
	for it.Next(&id, &row) {
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("counting group rows: %w", err)
	}
	return n, nil
}

// Forget ends the row of group id: the group's next call (there is none
// once it is removed) would take a new row. A program that looked the row
// up just before may still add to it: read it again a while later, then
// FreeRow it.
func (d *Daemon) Forget(id uint64) error {
	if err := d.objs.GroupRows.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forgetting group %d: %w", id, err)
	}
	return nil
}

// ClaimRow takes a free row for group id before any of its calls, for a
// client run (TakeRow, then ReuseRow): its calls are counted there from
// then on, and sampled one in sampleEvery (0 or 1: every call) when the
// row has a ring (SetRunRing). Every row taken: an error wrapping
// ErrNoFreeRow.
func (d *Daemon) ClaimRow(id uint64, sampleEvery uint32) (uint32, error) {
	row, err := d.TakeRow()
	if err != nil {
		return 0, err
	}
	if err := d.ReuseRow(row, id, sampleEvery); err != nil {
		return 0, errors.Join(err, d.FreeRow(row))
	}
	return row, nil
}

// NewRunRing creates a client run's ring buffer of size bytes, for
// SetRunRing; the daemon hands its descriptor to the client, which maps
// it. Separate from the daemon's maps: it lives as long as the run.
func NewRunRing(size int) (*ebpf.Map, error) {
	if err := ValidateRingBufSize(size); err != nil {
		return nil, err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "sfwatch_run", Type: ebpf.RingBuf, MaxEntries: uint32(size)})
	if err != nil {
		return nil, fmt.Errorf("creating a run's ring buffer of %d bytes: %w", size, err)
	}
	return m, nil
}

// SetRunRing sends the events of the calls counted in row to ring (a
// NewRunRing), whether or not the daemon has DaemonConfig.Events.
func (d *Daemon) SetRunRing(row uint32, ring *ebpf.Map) error {
	if err := d.objs.RunRings.Update(row, ring, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting the ring of row %d: %w", row, err)
	}
	return nil
}

// ClearRunRing stops row's events; a row without a ring is no error. The
// ring itself lives on until its last holder closes it.
func (d *Daemon) ClearRunRing(row uint32) error {
	if err := d.objs.RunRings.Delete(row); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clearing the ring of row %d: %w", row, err)
	}
	return nil
}

// FreeRow zeroes a forgotten row and gives it back for another group. A
// run's row is given back without its ring: ClearRunRing first (only a
// run's row has one; clearing waits for a grace period).
func (d *Daemon) FreeRow(row uint32) error {
	if err := d.zeroRow(row); err != nil {
		return fmt.Errorf("freeing row %d: %w", row, err)
	}
	if err := d.objs.FreeRows.Update(nil, row, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("freeing row %d: %w", row, err)
	}
	return nil
}

// zeroRow zeroes every slot of row (1 to MaxGroups) through memory.
func (d *Daemon) zeroRow(row uint32) error {
	if row == 0 || int(row) > d.maxGroups {
		return fmt.Errorf("row %d: want 1 to %d", row, d.maxGroups)
	}
	zero := make([]byte, RowSize*8)
	_, err := d.rows.WriteAt(zero, int64(row)*int64(RowSize)*8)
	return err
}

// DaemonCounters are the daemon's own totals, by DaemonDaemonCounter.
type DaemonCounters [DaemonDaemonCounterDAEMON_COUNTER_MAX]uint64

// Counters reads the daemon's own totals through memory.
func (d *Daemon) Counters() (DaemonCounters, error) {
	var c DaemonCounters
	var b [len(c) * 8]byte
	if _, err := d.counters.ReadAt(b[:], 0); err != nil {
		return c, fmt.Errorf("reading daemon counters: %w", err)
	}
	for i := range c {
		c[i] = binary.NativeEndian.Uint64(b[i*8:])
	}
	return c, nil
}

// Skipped counts, by program, the times the kernel did not run one of the
// daemon's programs (see Snapshot.Skipped).
func (d *Daemon) Skipped() (map[string]uint64, error) {
	skipped, _, err := programSkips(d.coll, d.progs, func() (uint64, error) {
		if d.kretprobe == nil {
			return 0, nil
		}
		return linkMissed(d.kretprobe)
	})
	return skipped, err
}

// RunStats reads each program's run count and total run time (counted
// only while BPF statistics are on: ebpf.EnableStats, for benchmarks).
func (d *Daemon) RunStats() (map[string]*ebpf.ProgramStats, error) {
	return runStats(d.coll, d.progs)
}

// RunStats is Daemon.RunStats for run's programs.
func (t *Tracer) RunStats() (map[string]*ebpf.ProgramStats, error) {
	return runStats(t.coll, programs())
}

func runStats(coll *ebpf.Collection, progs []program) (map[string]*ebpf.ProgramStats, error) {
	stats := make(map[string]*ebpf.ProgramStats, len(progs))
	for _, p := range progs {
		s, err := coll.Programs[p.name].Stats()
		if err != nil {
			return nil, fmt.Errorf("reading the statistics of %s: %w", p.name, err)
		}
		stats[p.name] = s
	}
	return stats, nil
}

// GroupEvents is the ring buffer of group creations and removals (struct
// group_event), for a ringreader.Reader: every event wakes the reader.
func (d *Daemon) GroupEvents() *ebpf.Map { return d.objs.GroupEvents }

// CallEvents is the ring buffer of the calls' events (struct call_event:
// sfwatch's struct event, then the group's id), for a ringreader.Reader.
func (d *Daemon) CallEvents() *ebpf.Map { return d.objs.CallEvents }

// DecodeGroupEvent decodes one record of GroupEvents.
func DecodeGroupEvent(raw []byte, e *DaemonGroupEvent) error {
	if len(raw) < binary.Size(e) {
		return fmt.Errorf("group event of %d bytes", len(raw))
	}
	if _, err := binary.Decode(raw, binary.NativeEndian, e); err != nil {
		return fmt.Errorf("decoding group event: %w", err)
	}
	return nil
}

// Detach stops counting; the rows stay readable.
func (d *Daemon) Detach() error {
	err := closeLinks(d.links)
	d.links, d.kretprobe = nil, nil
	return err
}

// Close detaches and frees everything. Idempotent.
func (d *Daemon) Close() error {
	errs := []error{d.Detach(), d.objs.Close()}
	if d.coll != nil {
		d.coll.Close()
	}
	return errors.Join(errs...)
}

// Instructions counts, by program, the instructions the kernel kept after
// verifying it (dead code removed): with DaemonConfig.Events off, the
// CallEvents path is gone (the runs' rings' stays).
func (d *Daemon) Instructions() (map[string]int, error) {
	n := make(map[string]int, len(d.progs))
	for _, p := range d.progs {
		prog := d.coll.Programs[p.name]
		if prog == nil {
			continue // not this kernel's
		}
		info, err := prog.Info()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p.name, err)
		}
		insns, err := info.Instructions()
		if err != nil {
			return nil, fmt.Errorf("reading the instructions of %s: %w", p.name, err)
		}
		n[p.name] = len(insns)
	}
	return n, nil
}
