package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Feature is one kernel feature the BPF programs need, probed by name
// rather than inferred from the kernel version (distributions backport).
type Feature struct {
	Name   string // as doctor and CheckKernel name it
	Detail string // what it is
	Err    error  // nil when the kernel has it
}

// probes are what bpf/sfwatch.c uses that older kernels lack: on 5.10,
// loading fails with only "map create: invalid argument".
//
// slow marks a probe that costs more than a run can spend on it every time
// (creating a task storage map is far slower than the other probes):
// CheckKernel leaves it out, and Open runs it only to explain a
// failed load. No kernel has bpf_task_storage_get without task storage.
var probes = []struct {
	name, detail string
	slow         bool
	probe        func() error
}{
	{"ring buffer", "BPF_MAP_TYPE_RINGBUF (events)", false, func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{"task storage", "BPF_MAP_TYPE_TASK_STORAGE (calls in flight)", true, func() error { return features.HaveMapType(ebpf.TaskStorage) }},
	{"bpf_task_storage_get", "helper, in tracepoint programs", false, func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnTaskStorageGet)
	}},
	{"bpf_get_current_task_btf", "helper, in tracepoint programs", false, func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetCurrentTaskBtf)
	}},
	{"bpf_get_current_ancestor_cgroup_id", "helper, in tracepoint programs (the cgroup filter)", false, func() error {
		return features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetCurrentAncestorCgroupId)
	}},
}

// Features probes every feature the programs need (the results are cached
// by cilium/ebpf).
func Features() []Feature { return probe(true) }

func probe(slow bool) []Feature {
	var fs []Feature
	for _, p := range probes {
		if p.slow && !slow {
			continue
		}
		fs = append(fs, Feature{Name: p.name, Detail: p.detail, Err: p.probe()})
	}
	return fs
}

// CheckKernel returns nil when the kernel has the features the programs
// need, else one line naming what is missing and the kernel: run and attach
// call it before they create anything. It leaves out the slow probes.
func CheckKernel() error { return checkFeatures(probe(false)) }

// checkFeatures says which of fs are missing, in one line.
func checkFeatures(fs []Feature) error {
	var missing []string
	var other []error
	for _, f := range fs {
		switch {
		case errors.Is(f.Err, ebpf.ErrNotSupported):
			missing = append(missing, f.Name)
		case f.Err != nil:
			other = append(other, fmt.Errorf("probing %s: %w", f.Name, f.Err))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("kernel %s lacks %s: sfwatch cannot trace here (sfwatch doctor lists what it needs)",
			kernelRelease(), strings.Join(missing, ", "))
	}
	return errors.Join(other...)
}

func kernelRelease() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(uts.Release[:])
}
