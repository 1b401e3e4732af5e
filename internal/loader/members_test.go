package loader_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
	"github.com/sfwatch/sfwatch/internal/counters"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestStaleMemberIgnored: an entry of the run's tasks whose start time is
// not its task's (what a skipped sched_process_exit leaves, once the id is
// reused) makes no escape, no followed task and no kill; the real entry
// of a task started the same way does. The start times the BPF side
// records are the ones /proc shows (Task.Alive).
func TestStaleMemberIgnored(t *testing.T) {
	testenv.RequirePrivileged(t)
	g, err := cgroup.New()
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	tr, err := loader.Open(loader.Config{CgroupID: g.ID, CgroupLevel: g.Level, Follow: true, CgroupPath: g.Rel})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	var pids [2]int
	for i := range pids {
		p, err := child.Start(child.Spec{Cmd: exec.Command("sleep", "30"), Group: g})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Wait()
		defer p.Signal(os.Kill)
		pids[i] = p.Pid()
	}
	var members [2]loader.SfwatchMember
	for i, pid := range pids {
		key := uint32(pid)
		// The exec program adds the command; it runs before exec returns,
		// but Start may return before the child execs.
		for deadline := time.Now().Add(5 * time.Second); ; {
			if err := tr.Maps().Members.Lookup(&key, &members[i]); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d: no members entry after 5 s", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
		task := loader.Task{pid, members[i].StartBoottime}
		if !task.Alive() {
			t.Fatalf("pid %d: start %d ns (BPF) is not /proc's", pid, task.StartBoottime)
		}
		if (loader.Task{pid, task.StartBoottime + 1e9/loader.UserHZ}).Alive() {
			t.Fatalf("pid %d: a start one tick later passes as the same task", pid)
		}
	}

	// The first entry as a stale one: another task's start.
	stale := members[0]
	stale.StartBoottime--
	key := uint32(pids[0])
	if err := tr.Maps().Members.Put(&key, &stale); err != nil {
		t.Fatal(err)
	}
	// Both leave the group, moved by this process to its own group.
	own, err := cgroup.OfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	for _, pid := range pids {
		if err := os.WriteFile(filepath.Join(own.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatal(err)
		}
	}

	c, err := counters.New(tr.Maps(), tr.Skips)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Totals.Escaped; n != 1 {
		t.Errorf("escaped = %d, want 1 (the task with the real entry)", n)
	}
	followed, err := tr.Followed()
	if err != nil {
		t.Fatal(err)
	}
	if want := (loader.Task{pids[1], members[1].StartBoottime}); len(followed) != 1 || followed[0] != want {
		t.Errorf("followed = %v, want [%v]", followed, want)
	}
}
