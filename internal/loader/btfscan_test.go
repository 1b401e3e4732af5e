package loader

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// TestTaskOffsets: the one-pass scan finds the offsets that cilium/ebpf's
// full BTF decoder finds, for the running kernel.
func TestTaskOffsets(t *testing.T) {
	if _, err := os.Stat(kernelBTFPath); err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	start := time.Now()
	offs, err := readTaskOffsets()
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
	wantOffs := taskOffsets{want["pid"], want["tgid"], want["group_leader"], want["start_boottime"]}
	if offs != wantOffs || offs.pid == 0 || offs.startBoottime == 0 || offs.groupLeader == 0 {
		t.Errorf("scan: %+v; cilium/ebpf: %+v", offs, wantOffs)
	}
	t.Logf("%+v, found in %v", offs, scan)
}

func TestStructMemberOffsetsErrors(t *testing.T) {
	for _, data := range [][]byte{nil, make([]byte, 24), {0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := structMemberOffsets(bytes.NewReader(data), "task_struct", "pid"); err == nil {
			t.Errorf("no error for %x", data)
		}
	}
}
