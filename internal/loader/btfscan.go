package loader

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// kernelBTFPath is the running kernel's own type information.
const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// taskOffsets are the byte offsets of the members of the running kernel's
// struct task_struct that the follow programs read from task pointers that
// raw tracepoints hand them.
type taskOffsets struct {
	pid, tgid, groupLeader, startBoottime uint32
}

// readTaskOffsets finds them in the kernel's BTF.
//
// Why not cilium/ebpf's btf package: it builds a Go value for every type
// it decodes, on every run. The offsets need one streamed pass over the
// string section and one over the type section, through 64 KiB buffers,
// whatever the size of the kernel's BTF.
func readTaskOffsets() (taskOffsets, error) {
	f, err := os.Open(kernelBTFPath)
	if err != nil {
		return taskOffsets{}, fmt.Errorf("reading kernel BTF: %w", err)
	}
	defer f.Close()
	offs, err := structMemberOffsets(f, "task_struct", "pid", "tgid", "group_leader", "start_boottime")
	if err != nil {
		return taskOffsets{}, fmt.Errorf("%s: %w", kernelBTFPath, err)
	}
	return taskOffsets{pid: offs[0], tgid: offs[1], groupLeader: offs[2], startBoottime: offs[3]}, nil
}

// BTF kinds (include/uapi/linux/btf.h) that have data after struct btf_type.
const (
	btfKindInt      = 1
	btfKindArray    = 3
	btfKindStruct   = 4
	btfKindUnion    = 5
	btfKindEnum     = 6
	btfKindFuncProt = 13
	btfKindVar      = 14
	btfKindDatasec  = 15
	btfKindDeclTag  = 17
	btfKindEnum64   = 19
)

// structMemberOffsets finds, in raw little-endian BTF, the first struct
// named name that has the named members, and returns their byte offsets,
// in order.
func structMemberOffsets(r io.ReaderAt, name string, members ...string) ([]uint32, error) {
	var hdr [24]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil || binary.LittleEndian.Uint16(hdr[:]) != 0xeb9f {
		return nil, errors.New("not little-endian BTF")
	}
	le := binary.LittleEndian
	hdrLen := int64(le.Uint32(hdr[4:]))
	typeOff, typeLen := hdrLen+int64(le.Uint32(hdr[8:])), int64(le.Uint32(hdr[12:]))
	strOff, strLen := hdrLen+int64(le.Uint32(hdr[16:])), int64(le.Uint32(hdr[20:]))

	// Where each name we look for starts in the string section: a type
	// or member names a string by its offset there.
	wanted := append([]string{name}, members...)
	strOffsets, err := findStrings(io.NewSectionReader(r, strOff, strLen), wanted)
	if err != nil {
		return nil, err
	}
	nameOff, ok := strOffsets[name]
	if !ok {
		return nil, fmt.Errorf("no struct %s", name)
	}

	types := bufio.NewReaderSize(io.NewSectionReader(r, typeOff, typeLen), 64<<10)
	var t [12]byte
	for {
		if _, err := io.ReadFull(types, t[:]); err != nil {
			return nil, fmt.Errorf("no struct %s", name)
		}
		info := le.Uint32(t[4:])
		kind, vlen, kflag := (info>>24)&0x1f, int(info&0xffff), info>>31
		var extra int
		switch kind {
		case btfKindInt, btfKindVar, btfKindDeclTag:
			extra = 4
		case btfKindArray:
			extra = 12
		case btfKindStruct, btfKindUnion, btfKindDatasec, btfKindEnum64:
			extra = 12 * vlen
		case btfKindEnum, btfKindFuncProt:
			extra = 8 * vlen
		}
		if kind != btfKindStruct || le.Uint32(t[:]) != nameOff {
			if _, err := types.Discard(extra); err != nil {
				return nil, fmt.Errorf("no struct %s", name)
			}
			continue
		}
		found := make(map[uint32]uint32, vlen) // member name offset -> byte offset
		var m [12]byte
		for range vlen {
			if _, err := io.ReadFull(types, m[:]); err != nil {
				return nil, fmt.Errorf("struct %s: %w", name, err)
			}
			bits := le.Uint32(m[8:])
			if kflag != 0 {
				bits &= 0xffffff // bitfield members: low 24 bits are the offset
			}
			found[le.Uint32(m[:])] = bits / 8
		}
		out := make([]uint32, len(members))
		for i, member := range members {
			off, ok := found[strOffsets[member]]
			if _, named := strOffsets[member]; !named || !ok {
				return nil, fmt.Errorf("struct %s has no member %s", name, member)
			}
			out[i] = off
		}
		return out, nil
	}
}

// findStrings streams a BTF string section (NUL-terminated strings one
// after the other) and returns where each wanted string starts.
func findStrings(r io.Reader, wanted []string) (map[string]uint32, error) {
	want := make(map[string]bool, len(wanted))
	for _, w := range wanted {
		want[w] = true
	}
	found := make(map[string]uint32, len(wanted))
	br := bufio.NewReaderSize(r, 64<<10)
	var off uint32
	for len(found) < len(want) {
		s, err := br.ReadSlice(0)
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any name we want: skip the rest of it.
			n := uint32(len(s))
			for errors.Is(err, bufio.ErrBufferFull) {
				s, err = br.ReadSlice(0)
				n += uint32(len(s))
			}
			off += n
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading BTF strings: %w", err)
		}
		if str := string(s[:len(s)-1]); want[str] {
			if _, dup := found[str]; !dup {
				found[str] = off
			}
		}
		off += uint32(len(s))
	}
	return found, nil
}
