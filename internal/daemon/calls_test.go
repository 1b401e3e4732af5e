package daemon

import (
	"sync"
	"syscall"
	"testing"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// recorder is an EventSink that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events map[string][]events.Event
	idle   int
}

func (r *recorder) Event(path string, e *events.Event, v events.Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = make(map[string][]events.Event)
	}
	if v.Violations != 0 {
		panic("a real call broke a rule")
	}
	r.events[path] = append(r.events[path], *e)
}

func (r *recorder) Idle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.idle++
}

// TestEvents: with Config.Events, every call of two watched sibling
// groups reaches the sink once Detach returns, with its group's path, its
// arguments and its result; none broke a rule, none was lost.
func TestEvents(t *testing.T) {
	p := parent(t)
	a, b := mkdir(t, p, "a"), mkdir(t, p, "b")
	var rec recorder
	d := start(t, Config{Watch: []string{p.Rel}, Events: &rec})
	runIn(t, a, "ok=3,ebadf=2")
	runIn(t, b, "ok=5,espipe=1")
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	type call struct {
		ret   int64
		count uint64
	}
	for _, g := range []struct {
		path  string
		calls []call
	}{
		{p.Rel + "/a", []call{{4096, 4096}, {4096, 4096}, {4096, 4096}, {-int64(syscall.EBADF), 4096}, {-int64(syscall.EBADF), 4096}}},
		{p.Rel + "/b", []call{{4096, 4096}, {4096, 4096}, {4096, 4096}, {4096, 4096}, {4096, 4096}, {-int64(syscall.ESPIPE), 10}}},
	} {
		got := rec.events[g.path]
		if len(got) != len(g.calls) {
			t.Errorf("%s: %d events, want %d", g.path, len(got), len(g.calls))
			continue
		}
		for i, e := range got {
			w := g.calls[i]
			if e.Ret != w.ret || e.Count != w.count {
				t.Errorf("%s: event %d: ret %d count %d, want %d %d", g.path, i, e.Ret, e.Count, w.ret, w.count)
			}
			if e.OffsetNull() {
				t.Errorf("%s: event %d: NULL offset, want a pointer", g.path, i)
			}
			if w.ret == 4096 && (e.OffsetBefore != 0 || e.OffsetAfter != 4096 || e.OutFd == 999) {
				t.Errorf("%s: event %d: offsets %d => %d, out_fd %d; want 0 => 4096", g.path, i, e.OffsetBefore, e.OffsetAfter, e.OutFd)
			}
			if w.ret == -int64(syscall.EBADF) && e.OutFd != 999 {
				t.Errorf("%s: event %d: out_fd %d, want 999", g.path, i, e.OutFd)
			}
			if e.Pid != got[0].Pid {
				t.Errorf("%s: event %d from pid %d, the first from %d", g.path, i, e.Pid, got[0].Pid)
			}
		}
	}
	if len(rec.events) != 2 {
		t.Errorf("events for %d paths, want 2", len(rec.events))
	}
	if n := d.Delivered(); n != 11 {
		t.Errorf("%d events delivered, want 11", n)
	}
	if lost, err := d.EventsLost(); err != nil || lost != 0 {
		t.Errorf("%d events lost (%v), want 0", lost, err)
	}
	if v := d.Violations(); len(v) != 0 {
		t.Errorf("violations %v, want none", v)
	}
}

// TestEventsOff: without Config.Events the verifier drops the event path
// of the exit programs: they keep fewer instructions than with it.
func TestEventsOff(t *testing.T) {
	p := parent(t)
	off := start(t, Config{Watch: []string{p.Rel}})
	nOff, err := off.Instructions()
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	on := start(t, Config{Watch: []string{p.Rel}, Events: &recorder{}})
	nOn, err := on.Instructions()
	if err != nil {
		t.Fatal(err)
	}
	exits := 0
	for _, name := range []string{"sys_exit_sendfile64", "sys_exit_sendfile64_kretprobe", "signal_deliver"} {
		if nOn[name] == 0 {
			continue // not this kernel's
		}
		exits++
		t.Logf("%s: %d instructions without events, %d with", name, nOff[name], nOn[name])
		// The event path: reserve, fill, the group's id, submit.
		if nOff[name]+40 > nOn[name] {
			t.Errorf("%s: %d instructions without events, %d with: the event path was not dropped", name, nOff[name], nOn[name])
		}
	}
	if exits < 2 {
		t.Errorf("%d exit programs loaded: %v", exits, nOn)
	}
	for name, n := range nOff {
		if name == "cgroup_mkdir" || name == "cgroup_rmdir" || name == "sys_enter_sendfile64" || name == "sys_enter_sendfile64_kprobe" {
			if nOn[name] != n {
				t.Errorf("%s: %d instructions without events, %d with: want the same", name, n, nOn[name])
			}
		}
	}
}

// TestEventsSample: with SampleEvery 2, about one call in two is emitted
// (the cycle is per CPU); delivered and sampled out make every call, and
// the totals stay exact.
func TestEventsSample(t *testing.T) {
	p := parent(t)
	a := mkdir(t, p, "a")
	var rec recorder
	d := start(t, Config{Watch: []string{p.Rel}, Events: &rec, SampleEvery: 2})
	runIn(t, a, "ok=20")
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	s := snapshot(t, d)
	want(t, s, p.Rel+"/a", 20, nil)
	ta := s[p.Rel+"/a"]
	sampled := ta.Get(loader.SfwatchCounterCOUNTER_SAMPLED_OUT)
	delivered := uint64(len(rec.events[p.Rel+"/a"]))
	if delivered+sampled != 20 || sampled < 5 || delivered < 10 {
		t.Errorf("%d events delivered, %d sampled out; want 20 in all, about half each", delivered, sampled)
	}
}
