// Package testworkload is the one home of the tests' sendfile workloads:
// the files they send from (Files), the sendfile loop that every test
// driving many calls runs (Loop), and the C programs that a test needs
// where Go cannot do it: a first system call before any runtime, signal
// handlers without SA_RESTART (Build, the sources in c/).
//
// Only tests, and the test binaries they re-execute as workloads, import it.
package testworkload

import (
	"os"
	"path/filepath"
)

// FileSize is the size of the file the workloads send from.
const FileSize = 16 << 10

// Files are the descriptors the workloads call sendfile with.
type Files struct {
	Dir     string
	In      *os.File // FileSize bytes
	DevNull *os.File
	Append  *os.File // opened O_APPEND: sendfile to it is EINVAL
	PipeR   *os.File // not seekable: a pointer offset on it is ESPIPE
	PipeW   *os.File
}

// OpenFiles makes a temporary directory with a file of FileSize bytes and
// opens the Files; Close removes it.
func OpenFiles() (*Files, error) {
	dir, err := os.MkdirTemp("", "sfwatch-workload-")
	if err != nil {
		return nil, err
	}
	f := &Files{Dir: dir}
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, make([]byte, FileSize), 0o644); err != nil {
		return nil, err
	}
	if f.In, err = os.Open(path); err != nil {
		return nil, err
	}
	if f.DevNull, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		return nil, err
	}
	if f.Append, err = os.OpenFile(filepath.Join(dir, "append"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if f.PipeR, f.PipeW, err = os.Pipe(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Files) Close() {
	for _, c := range []*os.File{f.In, f.DevNull, f.Append, f.PipeR, f.PipeW} {
		c.Close()
	}
	os.RemoveAll(f.Dir)
}
