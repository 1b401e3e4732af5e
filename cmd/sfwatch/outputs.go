package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// outputFile is a file that a flag names for sfwatch to write.
type outputFile struct{ flag, path string }

// checkOutputs finds, before anything is created or started, what would
// make an output file fail only after the child ran: a missing directory, a
// directory given as the file, a place that takes no file (a read-only file
// system), or two flags naming the same file, where the report would
// overwrite the events.
func checkOutputs(command string, files []outputFile) error {
	var named []outputFile
	for _, file := range files {
		if file.path == "" {
			continue
		}
		if err := checkOutput(file.path); err != nil {
			return usageError("%s: %s %s: %v", command, file.flag, file.path, err)
		}
		for _, prev := range named {
			if sameOutput(prev.path, file.path) {
				return usageError("%s: %s %s and %s %s are the same file: one would overwrite the other; give them different paths",
					command, prev.flag, prev.path, file.flag, file.path)
			}
		}
		named = append(named, file)
	}
	return nil
}

// checkOutput says why path cannot be written, or nil.
func checkOutput(path string) error {
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("directory %s does not exist; create it or pick another path", dir)
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return errors.New("is a directory; give the path of a file")
	case err == nil && !fi.Mode().IsRegular():
		return nil // a device or a pipe (/dev/null, /dev/stdout): written as it is
	}
	// A new or regular file: the directory must take a new file (reports
	// are written next to their target, then renamed), or else the file
	// must open for writing (it is then written in place).
	probe, dirErr := os.CreateTemp(dir, ".sfwatch-check-*")
	if dirErr == nil {
		probe.Close()
		return os.Remove(probe.Name())
	}
	if err == nil {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			return f.Close()
		}
	}
	return fmt.Errorf("cannot write in %s (%v); pick a writable directory", dir, errors.Unwrap(dirErr))
}

// sameOutput reports whether a and b name the same file that writing one
// would clobber the other in: the same existing regular file (symbolic or
// hard links included), or the same path in the same directory once
// symbolic links are resolved. A shared device or pipe (/dev/null) is fine.
func sameOutput(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb) && fa.Mode().IsRegular()
	}
	return resolvedPath(a) == resolvedPath(b)
}

// resolvedPath is path made absolute, with its directory's symbolic links
// resolved.
func resolvedPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	dir := filepath.Dir(abs)
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	return filepath.Join(dir, filepath.Base(abs))
}

// checkListenAddr says why addr is not a HOST:PORT that net.Listen takes,
// or nil. A host name is resolved only when sfwatch listens.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: not a port number", port)
	}
	return nil
}
