package loader

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TracefsPath is where sfwatch expects tracefs, and mounts it when missing.
const TracefsPath = "/sys/kernel/tracing"

// TracefsMounted reports whether the syscall tracepoints are visible.
func TracefsMounted() bool {
	_, err := os.Stat(TracefsPath + "/events/syscalls")
	return err == nil
}

// EnsureTracefs mounts tracefs at /sys/kernel/tracing when it is not there
// (a fresh machine boots without it). It is left mounted afterwards, as perf
// and bpftrace leave it: other tools may be using it by then.
func EnsureTracefs() error {
	if TracefsMounted() {
		return nil
	}
	if err := unix.Mount("nodev", TracefsPath, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mounting tracefs at %s: %w (mount it yourself: mount -t tracefs nodev %s)", TracefsPath, err, TracefsPath)
	}
	if !TracefsMounted() {
		return fmt.Errorf("tracefs at %s has no events/syscalls: this kernel lacks CONFIG_FTRACE_SYSCALLS", TracefsPath)
	}
	return nil
}
