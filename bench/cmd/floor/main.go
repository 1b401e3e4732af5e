// Command floor runs a command with the benchmark's floor attached: both
// sendfile64 tracepoints hold a program that returns at once (bench/floor).
// It measures what attaching costs a traced call before any work is done.
//
//	floor -- CMD [ARGS...]
//
// It exits with the command's status.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/sfwatch/sfwatch/bench/floor"
	"github.com/sfwatch/sfwatch/internal/loader"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: floor -- CMD [ARGS...]")
		os.Exit(2)
	}
	code, err := run(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(125)
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	if err := loader.EnsureTracefs(); err != nil {
		return 0, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return 0, err
	}
	var objs floor.FloorObjects
	if err := floor.LoadFloorObjects(&objs, nil); err != nil {
		return 0, fmt.Errorf("loading floor programs: %w", err)
	}
	defer objs.Close()
	exit, err := link.Tracepoint("syscalls", "sys_exit_sendfile64", objs.FloorExit, nil)
	if err != nil {
		return 0, fmt.Errorf("attaching tracepoint syscalls/sys_exit_sendfile64: %w", err)
	}
	defer exit.Close()
	enter, err := link.Tracepoint("syscalls", "sys_enter_sendfile64", objs.FloorEnter, nil)
	if err != nil {
		return 0, fmt.Errorf("attaching tracepoint syscalls/sys_enter_sendfile64: %w", err)
	}
	defer enter.Close()

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	// Pass SIGINT and SIGTERM on, as sfwatch run does.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}
