// Package gate holds a client's child between its fork and the exec of
// its command: the daemon must place the child in a group the client cannot
// write before the child runs a single instruction of the command, and Go
// has no hook between fork and exec.
//
// So the child first runs the gate (gate.c), a static program of a few
// hundred bytes that the daemon installs next to its socket: it waits for
// one byte on a pipe, then execs the command with the environment it was
// given. Its pid, parent, credentials, process group, terminal and file
// descriptors are the command's: exec keeps them all, so exec.Cmd's Wait,
// signals and process groups hold as for a direct start. The daemon knows
// the gate by its inode: a process that runs it has run nothing else yet.
package gate

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
)

//go:generate sh -c "gcc -Os -ffreestanding -fno-builtin -static -no-pie -nostdlib -fno-stack-protector -fno-asynchronous-unwind-tables -fno-pic -Wl,--build-id=none -Wl,-z,noexecstack -s -o gate_amd64.bin gate.c"

// program is gate.c, built for x86-64 (the only architecture sfwatch's BPF
// side supports).
//
//go:embed gate_amd64.bin
var program []byte

// Name is the gate's file name, next to the daemon's socket.
const Name = "sfwatch-gate"

// ExitAborted is the gate's exit status when its parent let it go without
// releasing it: the command never ran.
const ExitAborted = 125

// release is the byte that lets the gate exec the command.
const release = 'x'

// Install writes the gate into dir (root's, and readable by the clients)
// and returns its path. Written aside and renamed: a client never runs a
// half-written gate.
func Install(dir string) (string, error) {
	path := filepath.Join(dir, Name)
	tmp, err := os.CreateTemp(dir, Name+".*")
	if err != nil {
		return "", fmt.Errorf("installing the gate: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(program)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("installing the gate %s: %w", path, err)
	}
	return path, nil
}

// Hold is the parent's side of one held child.
type Hold struct {
	w    *os.File // written once to release the child
	r    *os.File // the child's end, closed once it started
	path string
	args []string
	xtra []*os.File
	cmd  *exec.Cmd
}

// Prepare makes cmd start held at the gate at gatePath: until Started,
// cmd runs the gate; Started puts cmd's fields back. cmd.Path must be
// resolved (child.Resolve).
func Prepare(cmd *exec.Cmd, gatePath string) (*Hold, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the held child's pipe: %w", err)
	}
	h := &Hold{w: w, r: r, path: cmd.Path, args: cmd.Args, xtra: cmd.ExtraFiles, cmd: cmd}
	args := cmd.Args
	if len(args) == 0 {
		args = []string{cmd.Path}
	}
	// The pipe comes after the caller's extra files: they keep their
	// numbers, and the gate closes the pipe before the command runs.
	fd := 3 + len(cmd.ExtraFiles)
	cmd.Path = gatePath
	cmd.Args = append([]string{Name, strconv.Itoa(fd), h.path}, args...)
	cmd.ExtraFiles = append(slices.Clip(cmd.ExtraFiles), r)
	return h, nil
}

// Started puts cmd's fields back as the caller set them, once cmd.Start
// has returned (whether or not it started).
func (h *Hold) Started() {
	h.cmd.Path, h.cmd.Args, h.cmd.ExtraFiles = h.path, h.args, h.xtra
	h.r.Close()
}

// Release lets the child exec its command.
func (h *Hold) Release() error {
	_, err := h.w.Write([]byte{release})
	h.w.Close()
	if err != nil {
		return fmt.Errorf("releasing the held child: %w", err)
	}
	return nil
}

// Abort makes the child exit with ExitAborted, its command never run.
// Idempotent, and harmless after Release.
func (h *Hold) Abort() { h.w.Close() }
