// Package cgrouptest gives a test a group of its own. Separate from
// internal/testenv, which cgroup's own tests import.
package cgrouptest

import (
	"testing"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// New is cgroup.New for a privileged test (testenv.RequirePrivileged):
// the group, with all below it and whatever runs there, is removed at the
// test's end, and a failure to remove it fails the test.
func New(t *testing.T) *cgroup.Group {
	t.Helper()
	testenv.RequirePrivileged(t)
	g, err := cgroup.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}
