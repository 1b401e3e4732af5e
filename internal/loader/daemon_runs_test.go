package loader_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/cgroup/cgrouptest"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/ringreader"
	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// loopEnv makes the test binary a workload: N sendfile calls of 4 KiB from
// its main thread (testworkload.Loop), then exit.
const loopEnv = "SFWATCH_LOADER_TEST_LOOP"

func TestMain(m *testing.M) {
	if v := os.Getenv(loopEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			_, err = testworkload.Loop{N: n, Offsets: testworkload.Pointer, Full: true}.Run()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// subgroup creates the group rel below g, removed with g.
func subgroup(t *testing.T, g *cgroup.Group, rel string) *cgroup.Group {
	t.Helper()
	path := filepath.Join(g.Path, rel)
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	sub, err := cgroup.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// loop runs n sendfile calls in a child process in g, to its end (30 s at
// most), and returns the child's pid.
func loop(t *testing.T, g *cgroup.Group, n int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), loopEnv+"="+strconv.Itoa(n))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%d calls in %s: %v\n%s", n, g.Path, err, out)
	}
	return cmd.Process.Pid
}

func openDaemon(t *testing.T, cfg loader.DaemonConfig) *loader.Daemon {
	t.Helper()
	testenv.RequirePrivileged(t)
	d, err := loader.OpenDaemon(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// runRing creates a run's ring of size bytes and sets it as row's.
func runRing(t *testing.T, d *loader.Daemon, row uint32, size int) *ebpf.Map {
	t.Helper()
	ring, err := loader.NewRunRing(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Close() })
	if err := d.SetRunRing(row, ring); err != nil {
		t.Fatal(err)
	}
	return ring
}

// drain reads every event in ring, as a client would (mapped, decoded as
// run's events), and counts them by pid.
func drain(t *testing.T, ring *ebpf.Map) map[uint32]int {
	t.Helper()
	r, err := ringreader.New(ring)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pids := map[uint32]int{}
	var e events.Event
	if _, err := r.Drain(func(raw []byte) error {
		if err := events.Decode(raw, &e); err != nil {
			return err
		}
		if e.Ret != 4096 || e.Count != 4096 {
			return fmt.Errorf("event of pid %d: sendfile(count %d) = %d, want 4096", e.Pid, e.Count, e.Ret)
		}
		pids[e.Pid]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return pids
}

// records counts the records in ring.
func records(t *testing.T, ring *ebpf.Map) int {
	t.Helper()
	r, err := ringreader.New(ring)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := r.Drain(func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func row(t *testing.T, d *loader.Daemon, r uint32) []uint64 {
	t.Helper()
	v, err := d.Row(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func claim(t *testing.T, d *loader.Daemon, g *cgroup.Group, sampleEvery uint32) uint32 {
	t.Helper()
	r, err := d.ClaimRow(g.ID, sampleEvery)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDaemonRunRings: a client run's group, below a watched subtree, has
// its calls (its subgroups' too) counted in its claimed row and their
// events in its own ring, sampled as it asked, with the daemon's events
// off; another run's ring, of another size, gets only its run's; a group
// without a run gets none anywhere.
func TestDaemonRunRings(t *testing.T) {
	parent := cgrouptest.New(t)
	a := subgroup(t, parent, "a")
	ax := subgroup(t, parent, "a/x")
	b := subgroup(t, parent, "b")
	c := subgroup(t, parent, "c")
	d := openDaemon(t, loader.DaemonConfig{MaxGroups: 8})

	rowA := claim(t, d, a, 1)
	rowB := claim(t, d, b, 4)
	if rowA == rowB || rowA == 0 || rowB == 0 {
		t.Fatalf("rows %d and %d claimed", rowA, rowB)
	}
	ringA := runRing(t, d, rowA, 64<<10)
	ringB := runRing(t, d, rowB, 16<<10)
	// The runs' watches after the parent's: First still puts them first.
	if err := d.SetWatches([]loader.Watch{
		{ID: parent.ID, Level: parent.Level},
		{ID: a.ID, Level: a.Level, Depth: loader.DepthSubtree, First: true},
		{ID: b.ID, Level: b.Level, Depth: loader.DepthSubtree, First: true},
	}); err != nil {
		t.Fatal(err)
	}

	pidA := loop(t, a, 20)
	pidAX := loop(t, ax, 5)
	pidB := loop(t, b, 40)
	loop(t, c, 10)

	if got, want := drain(t, ringA), map[uint32]int{uint32(pidA): 20, uint32(pidAX): 5}; !equal(got, want) {
		t.Errorf("run a's ring (64 KiB): events by pid %v, want %v", got, want)
	}
	if got, want := drain(t, ringB), map[uint32]int{uint32(pidB): 10}; !equal(got, want) {
		t.Errorf("run b's ring (16 KiB, --sample 4): events by pid %v, want %v", got, want)
	}
	if got := drain(t, d.CallEvents()); len(got) != 0 {
		t.Errorf("call_events with events off: %v", got)
	}

	ra, rb := row(t, d, rowA), row(t, d, rowB)
	for _, c := range []struct {
		name         string
		got, want    uint64
		slot         int
		row          uint32
		rowID, group uint64
	}{
		{"a: calls", ra[loader.SfwatchCounterCOUNTER_CALLS], 25, 0, rowA, ra[loader.RowID], a.ID},
		{"a: sampled out", ra[loader.SfwatchCounterCOUNTER_SAMPLED_OUT], 0, 0, rowA, ra[loader.RowID], a.ID},
		{"a: lost", ra[loader.SfwatchCounterCOUNTER_LOST], 0, 0, rowA, ra[loader.RowID], a.ID},
		{"b: calls", rb[loader.SfwatchCounterCOUNTER_CALLS], 40, 0, rowB, rb[loader.RowID], b.ID},
		{"b: sampled out", rb[loader.SfwatchCounterCOUNTER_SAMPLED_OUT], 30, 0, rowB, rb[loader.RowID], b.ID},
		{"b: lost", rb[loader.SfwatchCounterCOUNTER_LOST], 0, 0, rowB, rb[loader.RowID], b.ID},
		{"b: sample every", rb[loader.RowSampleEvery], 4, 0, rowB, rb[loader.RowID], b.ID},
		{"b: sample tick", rb[loader.RowSampleTick], 40, 0, rowB, rb[loader.RowID], b.ID},
	} {
		if c.got != c.want {
			t.Errorf("row %d %s = %d, want %d", c.row, c.name, c.got, c.want)
		}
		if c.rowID != c.group {
			t.Errorf("row %d: id %d, want group %d", c.row, c.rowID, c.group)
		}
	}

	// c took a row of its own at its first call, as any group: counted
	// there, with no ring.
	ids, err := d.RowIDs(nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for r, id := range ids {
		if id == c.ID {
			found = true
			if n := row(t, d, uint32(r))[loader.SfwatchCounterCOUNTER_CALLS]; n != 10 {
				t.Errorf("group c, row %d: %d calls, want 10", r, n)
			}
		}
	}
	if !found {
		t.Errorf("group c has no row: %v", ids)
	}
}

// TestDaemonRunRingFreed: with the daemon's events on, a run's calls go
// to its ring only; a row given back has no ring, and its next group's
// calls go to call_events as any group's; a claim with every row taken
// fails with ErrNoFreeRow.
func TestDaemonRunRingFreed(t *testing.T) {
	parent := cgrouptest.New(t)
	a := subgroup(t, parent, "a")
	b := subgroup(t, parent, "b")
	d := openDaemon(t, loader.DaemonConfig{MaxGroups: 1, Events: true})

	r := claim(t, d, a, 0)
	ring := runRing(t, d, r, 16<<10)
	if _, err := d.ClaimRow(b.ID, 1); !errors.Is(err, loader.ErrNoFreeRow) {
		t.Fatalf("claiming a second row of one: %v, want ErrNoFreeRow", err)
	}
	if err := d.SetWatches([]loader.Watch{
		{ID: a.ID, Level: a.Level, Depth: loader.DepthSubtree, First: true},
		{ID: b.ID, Level: b.Level},
	}); err != nil {
		t.Fatal(err)
	}
	pid := loop(t, a, 3)
	if got, want := drain(t, ring), map[uint32]int{uint32(pid): 3}; !equal(got, want) {
		t.Errorf("run's ring: events by pid %v, want %v", got, want)
	}
	if n := records(t, d.CallEvents()); n != 0 {
		t.Errorf("call_events got %d records of a run's calls", n)
	}
	if err := d.Forget(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.ClearRunRing(r); err != nil {
		t.Fatal(err)
	}
	if err := d.FreeRow(r); err != nil {
		t.Fatal(err)
	}
	loop(t, b, 4) // takes the freed row at its first call
	if got := drain(t, ring); len(got) != 0 {
		t.Errorf("freed run's ring got events: %v", got)
	}
	if n := records(t, d.CallEvents()); n != 4 {
		t.Errorf("call_events: %d records of b's 4 calls", n)
	}
	if n := row(t, d, r)[loader.SfwatchCounterCOUNTER_CALLS]; n != 4 {
		t.Errorf("row %d after b: %d calls, want 4", r, n)
	}
	if err := d.ClearRunRing(r); err != nil {
		t.Errorf("clearing a row without a ring: %v", err)
	}
}

func equal(a, b map[uint32]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
