package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// usage is what should stay flat while groups come and go.
type usage struct {
	rssKiB                     int
	goroutines, fds            int
	groups, rows, names, rowOf int
	kernelRows                 int // entries of the kernel's group -> row map
}

func measure(t *testing.T, d *Daemon) usage {
	t.Helper()
	runtime.GC()
	var u usage
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			u.rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(fds)
	u.goroutines = runtime.NumGoroutine()
	d.mu.Lock()
	u.groups, u.rows, u.names, u.rowOf = len(d.groups), len(d.rows), len(d.names), len(d.rowOf)
	d.mu.Unlock()
	if u.kernelRows, err = d.bpf.GroupRows(); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestChurn: 5,000 groups created, used once and removed while the daemon
// runs: memory, map entries, goroutines and descriptors stay flat, and
// calls past --max-groups are counted under _other.
func TestChurn(t *testing.T) {
	testenv.RequirePrivileged(t)
	if testing.Short() {
		t.Skip("5,000 groups: not with -short")
	}
	const maxGroups = 64
	p := parent(t)
	d := start(t, Config{Watch: []string{p.Rel}, MaxGroups: maxGroups, Retention: time.Second})

	// More groups at once than there are rows: the rest go to _other.
	const wide = maxGroups + 16
	var dirs []string
	for i := range wide {
		dir := mkdir(t, p, fmt.Sprintf("wide%d", i))
		runIn(t, dir, "ok=1")
		dirs = append(dirs, dir)
	}
	s := snapshot(t, d)
	if other := s[Other]; other.Calls() != wide-maxGroups {
		t.Errorf("%d calls under %s, want %d", other.Calls(), Other, wide-maxGroups)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n := c[loader.DaemonDaemonCounterDAEMON_OVERFLOW]; n != wide-maxGroups {
		t.Errorf("overflow counter %d, want %d", n, wide-maxGroups)
	}
	for _, dir := range dirs {
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}

	settle := func() usage {
		time.Sleep(rowGrace + time.Second + 2*tick) // rows given back, paths past retention
		return measure(t, d)
	}
	const total = 5000
	var before usage
	start := time.Now()
	for i := range total {
		if i == 1000 {
			before = settle()
		}
		dir := mkdir(t, p, fmt.Sprintf("churn%d", i))
		runIn(t, dir, "ok=1")
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d groups in %v", total, time.Since(start))
	after := settle()
	t.Logf("after 1,000 groups: %+v; after %d: %+v", before, total, after)
	if after.goroutines > before.goroutines+2 || after.fds > before.fds {
		t.Errorf("goroutines or descriptors grew: %+v, then %+v", before, after)
	}
	if after.groups > 1 || after.rows > 0 || after.names > 1 || after.rowOf > 0 || after.kernelRows > 0 {
		t.Errorf("the daemon's maps did not empty: %+v", after)
	}
	if after.rssKiB > before.rssKiB+8<<10 {
		t.Errorf("RSS grew by %d KiB", after.rssKiB-before.rssKiB)
	}
	// Every call is counted: those of paths dropped after the retention
	// are gone from the totals, but _other's stay, and it grew no further
	// than the rows in use allow.
	s = snapshot(t, d)
	if other := s[Other]; other.Calls() < wide-maxGroups {
		t.Errorf("%d calls under %s, want at least %d", other.Calls(), Other, wide-maxGroups)
	}
}
