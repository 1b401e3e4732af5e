package loader

import (
	"fmt"
	"os"
	"strings"

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

// fieldOffsets reads, from the format file of tracepoint group/name, the
// offset of each named field in the record a tracepoint program gets as
// its context. Layouts move between kernels (a comm that became
// __data_loc, an id that grew to 64 bits), so programs that read fields
// of such tracepoints take the offsets from here.
func fieldOffsets(group, name string, fields ...string) (map[string]uint32, error) {
	file := TracefsPath + "/events/" + group + "/" + name + "/format"
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading tracepoint format: %w", err)
	}
	offsets, err := parseFormat(string(data), fields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return offsets, nil
}

// parseFormat finds the fields in the text of a format file, whose lines
// read "\tfield:int pid;\toffset:24;\tsize:4;\tsigned:1;".
func parseFormat(format string, fields []string) (map[string]uint32, error) {
	offsets := make(map[string]uint32, len(fields))
	for _, line := range strings.Split(format, "\n") {
		decl, rest, ok := strings.Cut(strings.TrimSpace(line), ";")
		decl, isField := strings.CutPrefix(decl, "field:")
		if !ok || !isField {
			continue
		}
		// The name is the declaration's last word, less any array
		// suffix: "__data_loc char[] dst_path", "char comm[16]".
		words := strings.Fields(decl)
		if len(words) == 0 {
			continue
		}
		name, _, _ := strings.Cut(words[len(words)-1], "[")
		var off uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(rest), "offset:%d;", &off); err != nil {
			continue
		}
		offsets[name] = off
	}
	for _, f := range fields {
		if _, ok := offsets[f]; !ok {
			return nil, fmt.Errorf("no field %s", f)
		}
	}
	return offsets, nil
}
