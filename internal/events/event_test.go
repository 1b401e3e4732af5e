package events

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/sfwatch/sfwatch/internal/loader"
)

func TestRecordSize(t *testing.T) {
	// struct event in bpf/sfwatch.c: seven 8-byte fields, six 4-byte
	// fields, comm[16]. A different size means the BPF object and this
	// package disagree.
	if RecordSize != 96 {
		t.Errorf("RecordSize = %d, want 96", RecordSize)
	}
	if RecordSize != int(unsafe.Sizeof(loader.SfwatchEvent{})) {
		t.Errorf("Event and loader.SfwatchEvent differ in size")
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	want := withOffset(call(5, 7, 4096, 4000), 1<<40, 1<<40+4000)
	want.Reserved = 0xdeadbeef
	setComm(&want, "abcdefghijklmno")
	raw := encode(&want)

	// Misaligned on purpose: Decode copies bytes, it does not cast.
	buf := make([]byte, len(raw)+1)
	copy(buf[1:], raw)
	var got Event
	if err := Decode(buf[1:], &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Decode(encode(e)) = %+v, want %+v", got, want)
	}
	if !bytes.Equal(encode(&got), raw) {
		t.Error("re-encoding the decoded event changed its bytes")
	}
}

func TestDecodeWrongSize(t *testing.T) {
	for _, n := range []int{0, 1, RecordSize - 1, RecordSize + 1, 2 * RecordSize} {
		var e Event
		err := Decode(make([]byte, n), &e)
		if err == nil {
			t.Errorf("Decode of %d bytes: no error", n)
			continue
		}
		if want := "decoding event: record of"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Decode of %d bytes: error %q, want it to start with %q", n, err, want)
		}
	}
	var e Event
	if err := Decode(nil, &e); err == nil {
		t.Error("Decode(nil): no error")
	}
}

// FuzzDecode: no input panics, a wrong size is an error, and an exact-size
// record survives decode and re-encode unchanged (struct event has no
// padding, so every byte is a field's).
func FuzzDecode(f *testing.F) {
	e := withOffset(call(5, 7, 4096, 4096), 0, 4096)
	raw := encode(&e)
	f.Add(raw)
	f.Add(raw[:RecordSize-1])
	f.Add(append(raw, 0))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, RecordSize))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var e Event
		err := Decode(raw, &e)
		if len(raw) != RecordSize {
			if err == nil {
				t.Fatalf("Decode of %d bytes: no error", len(raw))
			}
			return
		}
		if err != nil {
			t.Fatalf("Decode of %d bytes: %v", len(raw), err)
		}
		if !bytes.Equal(encode(&e), raw) {
			t.Fatal("decode then encode is not the identity")
		}
		// Whatever the bytes, the renderers must cope.
		v := Validate(&e)
		AppendText(nil, &e, v, TextOptions{Durations: true})
		AppendJSON(nil, &e, v, JSONOptions{})
	})
}

func TestComm(t *testing.T) {
	var e Event
	setComm(&e, "nginx")
	if got := e.Comm(); got != "nginx" {
		t.Errorf("Comm() = %q, want nginx", got)
	}
	// No NUL at all: the kernel always writes one, but a record is data.
	copy(e.SfwatchEvent.Comm[:], "0123456789abcdef")
	if got := e.Comm(); got != "0123456789abcdef" {
		t.Errorf("Comm() without NUL = %q", got)
	}
}

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		ret  int64
		want syscall.Errno
	}{
		{4096, 0}, {0, 0}, {-9, syscall.EBADF}, {-512, 512}, {-4095, 4095}, {-4096, 0}, {-1 << 40, 0},
	} {
		e := call(1, 2, 3, tc.ret)
		if got := e.Errno(); got != tc.want {
			t.Errorf("ret %d: Errno() = %d, want %d", tc.ret, got, tc.want)
		}
	}
}

func TestClass(t *testing.T) {
	for _, tc := range []struct {
		count uint64
		ret   int64
		want  string
	}{
		{4096, 4096, "ok"},
		{4096, 5000, "ok"}, // a violation, but not short
		{4096, 1, "short"},
		{4096, 0, "eof"},
		{0, 0, "empty"}, // asked for nothing: no end of file
		{4096, -9, "error"},
		{4096, -5000, "error"},
	} {
		e := call(1, 2, tc.count, tc.ret)
		if got := Validate(&e).Class.String(); got != tc.want {
			t.Errorf("count %d ret %d: class %s, want %s", tc.count, tc.ret, got, tc.want)
		}
	}
	if got := Class(9).String(); got != "Class(9)" {
		t.Errorf("Class(9).String() = %q", got)
	}
}
