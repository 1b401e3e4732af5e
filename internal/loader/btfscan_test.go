package loader

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// TestTaskIDOffsets: the one-pass scan finds the offsets that cilium/ebpf's
// full BTF decoder finds, for the running kernel.
func TestTaskIDOffsets(t *testing.T) {
	if _, err := os.Stat(kernelBTFPath); err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	start := time.Now()
	pid, tgid, err := taskIDOffsets()
	if err != nil {
		t.Fatal(err)
	}
	scan := time.Since(start)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{}
	for _, m := range task.Members {
		want[m.Name] = uint32(m.Offset.Bytes())
	}
	if pid != want["pid"] || tgid != want["tgid"] || pid == 0 {
		t.Errorf("scan: pid at %d, tgid at %d; cilium/ebpf: %d, %d", pid, tgid, want["pid"], want["tgid"])
	}
	t.Logf("pid at %d, tgid at %d, found in %v", pid, tgid, scan)
}

func TestStructMemberOffsetsErrors(t *testing.T) {
	for _, data := range [][]byte{nil, make([]byte, 24), {0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := structMemberOffsets(bytes.NewReader(data), "task_struct", "pid"); err == nil {
			t.Errorf("no error for %x", data)
		}
	}
}
