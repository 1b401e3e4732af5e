package testworkload

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The C programs' sources, built from a copy wherever the test binary runs.
//
//go:embed c/*.c c/*.h
var sources embed.FS

// Programs are the C programs of c/ and their gcc flags. They are static,
// so that a copy built here runs on a machine without gcc or libc (a
// kernel booted in qemu, scripts/kernels).
//
//   - first: its very first system call, before anything else runs, is a
//     sendfile (no libc, no dynamic loader).
//   - eintr: a call interrupted under a handler without SA_RESTART (EINTR),
//     then under one with it (restarted).
//   - signals: blocked calls that take a burst of signals of several kinds.
var Programs = map[string][]string{
	"first":   {"-nostdlib", "-static"},
	"eintr":   {"-static"},
	"signals": {"-static"},
}

// Build compiles the program name (a key of Programs) into bin with gcc,
// the compiler's path.
func Build(gcc, name, bin string) error {
	flags, ok := Programs[name]
	if !ok {
		return fmt.Errorf("no C test program %q", name)
	}
	dir, err := os.MkdirTemp("", "sfwatch-testprogram-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	entries, err := sources.ReadDir("c")
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := sources.ReadFile("c/" + e.Name())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	args := append(append([]string{"-O2", "-Wall"}, flags...), "-o", bin, filepath.Join(dir, name+".c"))
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
