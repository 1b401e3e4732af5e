// Command recmiss runs a command (an sfwatch run) and reports, for each BPF
// program loaded meanwhile, how often it ran, its mean run time, and how
// often the kernel skipped it for recursion (bpf_prog_info.recursion_misses):
// a skipped sys_enter or sys_exit program is a call sfwatch never sees. The programs are gone when
// sfwatch exits, so they are read while it runs. Used by scripts/kernels.
//
//	recmiss -- sfwatch run --quiet -- sendfileloop -n 100000
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

type seen struct {
	name           string
	runs, recursed uint64
	runtime        time.Duration
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: recmiss -- CMD [ARGS...]")
		os.Exit(2)
	}
	// Run counts need the stats switch; recursion misses are always kept.
	if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer stats.Close()
	}
	before := map[ebpf.ProgramID]bool{}
	poll(func(id ebpf.ProgramID, _ *ebpf.Program, _ *ebpf.ProgramInfo) { before[id] = true })

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "recmiss:", err)
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	progs := map[ebpf.ProgramID]*seen{}
	record := func(id ebpf.ProgramID, p *ebpf.Program, info *ebpf.ProgramInfo) {
		if before[id] {
			return
		}
		s := progs[id]
		if s == nil {
			s = &seen{name: info.Name}
			progs[id] = s
		}
		if st, err := p.Stats(); err == nil {
			s.runs, s.recursed = max(s.runs, st.RunCount), max(s.recursed, st.RecursionMisses)
			s.runtime = max(s.runtime, st.Runtime)
		}
	}
	var err error
	for running := true; running; {
		select {
		case err = <-done:
			running = false
		case <-time.After(20 * time.Millisecond):
			poll(record)
		}
	}
	ids := make([]ebpf.ProgramID, 0, len(progs))
	for id := range progs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		s := progs[id]
		var perRun time.Duration
		if s.runs > 0 {
			perRun = s.runtime / time.Duration(s.runs)
		}
		fmt.Printf("recmiss: program %d %s: %d runs, %d recursion misses, %v a run\n", id, s.name, s.runs, s.recursed, perRun)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.ExitCode())
	}
}

// poll calls f for every loaded program.
func poll(f func(ebpf.ProgramID, *ebpf.Program, *ebpf.ProgramInfo)) {
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		if info, err := p.Info(); err == nil {
			f(id, p, info)
		}
		p.Close()
	}
}
