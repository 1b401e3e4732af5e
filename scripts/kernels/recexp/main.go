//go:build recexp

// Command recexp is an experiment (issue 14; docs/kernels.md): it runs a
// command with sfwatch's sendfile bodies attached through one variant entry
// point and prints, per program, its runs and recursion misses.
//
//	recexp -variant tp|pd|kp|raw|empty -- sendfileloop -n 100000 -threads 2
//
// tp: the syscall tracepoints, as sfwatch; pd: the same inside
// bpf_preempt_disable/enable; kp: kprobe + kretprobe on
// __x64_sys_sendfile64; raw: raw tracepoints sys_enter/sys_exit; empty:
// programs that return at once on the syscall tracepoints. Every task is
// watched (the root group). Not part of sfwatch.
package main

import (
	"bytes"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/loader"
)

//go:generate ./gen.sh
//go:generate clang -O2 -g -Wall -Werror -nostdinc -I../../../bpf/include -target bpfel -c variants.c -o variants.o

//go:embed variants.o
var object []byte

func main() {
	variant := flag.String("variant", "tp", "tp, pd, kp, raw or empty")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: recexp -variant V -- CMD [ARGS...]")
		os.Exit(2)
	}
	if err := run(*variant, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "recexp:", err)
		os.Exit(1)
	}
}

func run(variant string, args []string) error {
	enter, exit := variant+"_enter", variant+"_exit"
	if err := loader.EnsureTracefs(); err != nil {
		return err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer stats.Close()
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return err
	}
	if spec.Programs[enter] == nil {
		return fmt.Errorf("no variant %q", variant)
	}
	for name := range spec.Programs {
		if name != enter && name != exit {
			delete(spec.Programs, name)
		}
	}
	var stat unix.Stat_t
	if err := unix.Stat("/sys/fs/cgroup", &stat); err != nil {
		return err
	}
	for name, v := range map[string]any{
		"target_cgroup_id": stat.Ino, "target_level": uint32(0),
		"sample_every": uint32(1), "wakeup_bytes": uint64(loader.DefaultRingBufSize / 8),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("%+v", ve)
		}
		return err
	}
	defer coll.Close()
	var links []link.Link
	defer func() {
		for _, l := range links {
			l.Close()
		}
	}()
	attach := func(name string) error {
		p := coll.Programs[name]
		var l link.Link
		var err error
		switch sec := spec.Programs[name].SectionName; {
		case variant == "kp" && name == enter:
			l, err = link.Kprobe("__x64_sys_sendfile64", p, nil)
		case variant == "kp":
			l, err = link.Kretprobe("__x64_sys_sendfile64", p, nil)
		case variant == "raw" && name == enter:
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: p})
		case variant == "raw":
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: p})
		default:
			tp := sec[len("tracepoint/syscalls/"):]
			l, err = link.Tracepoint("syscalls", tp, p, nil)
		}
		if err != nil {
			return fmt.Errorf("attaching %s: %w", name, err)
		}
		links = append(links, l)
		return nil
	}
	if err := attach(exit); err != nil {
		return err
	}
	if err := attach(enter); err != nil {
		return err
	}
	// Drain the ring as sfwatch does, so that no event is lost.
	stop := make(chan struct{})
	if m := coll.Maps["events"]; m != nil && variant != "empty" {
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			return err
		}
		done := make(chan struct{})
		defer func() { close(stop); rd.Close(); <-done }()
		go func() {
			defer close(done)
			var rec ringbuf.Record
			for {
				select {
				case <-stop:
					return
				default:
				}
				rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
				if err := rd.ReadInto(&rec); err == nil {
					continue
				} else if !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}()
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmdErr := cmd.Run()
	for _, l := range links {
		// A kretprobe misses calls when more than maxactive are in flight.
		if info, err := l.Info(); err == nil {
			if pe := info.PerfEvent(); pe != nil && pe.Kprobe() != nil {
				fmt.Printf("recexp: %s link %s: %d missed (kprobe)\n", variant, pe.Kprobe().Function, pe.Kprobe().Missed)
			}
		}
		l.Close() // stop counting before reading
	}
	links = nil
	for _, name := range []string{enter, exit} {
		st, err := coll.Programs[name].Stats()
		if err != nil {
			return err
		}
		fmt.Printf("recexp: %s %s: %d runs, %d recursion misses\n", variant, name, st.RunCount, st.RecursionMisses)
	}
	if m := coll.Maps["counters"]; m != nil && variant != "empty" {
		var calls []uint64
		if err := m.Lookup(uint32(0), &calls); err == nil {
			var n uint64
			for _, c := range calls {
				n += c
			}
			fmt.Printf("recexp: %s calls counted %d\n", variant, n)
		}
	}
	return cmdErr
}
