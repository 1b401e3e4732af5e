package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// kernelBTFPath is the running kernel's own type information.
const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// taskIDOffsets returns the byte offsets of pid and tgid in the running
// kernel's struct task_struct, which the follow programs read from task
// pointers that raw tracepoints hand them.
//
// Why not cilium/ebpf's btf package: it builds a Go value for every type
// it decodes, 48 ms here for LoadKernelSpec and one lookup, on every run.
// The two offsets need one linear pass over the type section (a few ms).
func taskIDOffsets() (pid, tgid uint32, err error) {
	data, err := os.ReadFile(kernelBTFPath)
	if err != nil {
		return 0, 0, fmt.Errorf("reading kernel BTF: %w", err)
	}
	offs, err := structMemberOffsets(data, "task_struct", "pid", "tgid")
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", kernelBTFPath, err)
	}
	return offs[0], offs[1], nil
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

// structMemberOffsets finds, in raw BTF data, the first struct named name
// that has a size (not a forward declaration), and returns the byte
// offsets of the named members, in order.
func structMemberOffsets(data []byte, name string, members ...string) ([]uint32, error) {
	le := binary.LittleEndian
	if len(data) < 24 || le.Uint16(data) != 0xeb9f {
		return nil, errors.New("not little-endian BTF")
	}
	hdrLen := le.Uint32(data[4:])
	typeOff, typeLen := le.Uint32(data[8:]), le.Uint32(data[12:])
	strOff, strLen := le.Uint32(data[16:]), le.Uint32(data[20:])
	if uint64(hdrLen)+uint64(typeOff)+uint64(typeLen) > uint64(len(data)) ||
		uint64(hdrLen)+uint64(strOff)+uint64(strLen) > uint64(len(data)) {
		return nil, errors.New("BTF sections out of bounds")
	}
	types := data[hdrLen+typeOff : hdrLen+typeOff+typeLen]
	strs := data[hdrLen+strOff : hdrLen+strOff+strLen]
	str := func(off uint32) string {
		if off >= uint32(len(strs)) {
			return ""
		}
		end := off
		for end < uint32(len(strs)) && strs[end] != 0 {
			end++
		}
		return string(strs[off:end])
	}

	for p := 0; p+12 <= len(types); {
		nameOff, info := le.Uint32(types[p:]), le.Uint32(types[p+4:])
		kind, vlen, kflag := (info>>24)&0x1f, int(info&0xffff), info>>31
		p += 12
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
		if p+extra > len(types) {
			break
		}
		if kind == btfKindStruct && hasName(strs, nameOff, name) {
			found := make(map[string]uint32, vlen)
			for i := range vlen {
				m := types[p+12*i:]
				bits := le.Uint32(m[8:])
				if kflag != 0 {
					bits &= 0xffffff // bitfield members: low 24 bits are the offset
				}
				found[str(le.Uint32(m))] = bits / 8
			}
			out := make([]uint32, len(members))
			for i, member := range members {
				off, ok := found[member]
				if !ok {
					return nil, fmt.Errorf("struct %s has no member %s", name, member)
				}
				out[i] = off
			}
			return out, nil
		}
		p += extra
	}
	return nil, fmt.Errorf("no struct %s", name)
}

// hasName tells whether the string at off in strs is name, without
// building a string for each of the kernel's many thousand structs.
func hasName(strs []byte, off uint32, name string) bool {
	end := uint64(off) + uint64(len(name))
	return end < uint64(len(strs)) && string(strs[off:end]) == name && strs[end] == 0
}
