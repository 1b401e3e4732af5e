// Package loadertest opens a tracer for the tests of the packages that
// read what the loader hands over (the ring buffer, the counters).
package loadertest

import (
	"os"
	"testing"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// OpenOwn opens a tracer on this test's own cgroup (ringBufSize 0: the
// default) and the files to call sendfile with: this binary as input,
// /dev/null as output. All are closed when the test ends.
func OpenOwn(t *testing.T, ringBufSize int) (tr *loader.Tracer, in, out *os.File) {
	t.Helper()
	testenv.RequirePrivileged(t)
	g, err := cgroup.OfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	id, level := g.ID, g.Level
	g.Close()
	tr, err = loader.Open(loader.Config{CgroupID: id, CgroupLevel: level, RingBufSize: ringBufSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if in, err = os.Open("/proc/self/exe"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	if out, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return tr, in, out
}
