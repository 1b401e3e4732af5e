package testworkload

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestLoopExpected: what a loop's calls return is what Expected says the
// tests may assert on, for every kind of loop the tests run (sendfile to
// /dev/null needs no privilege).
func TestLoopExpected(t *testing.T) {
	for name, l := range map[string]Loop{
		"threads":       {Threads: 4, N: 2001, Offsets: Null},
		"loop":          {Threads: 2, N: 1001, Offsets: Alternate},
		"pm-calls":      {Threads: 2, N: 1000, Offsets: Alternate, Size: 64 << 10, Full: true},
		"pm-calls pin":  {Threads: 1, N: 1000, Offsets: Alternate, Size: 64 << 10, Full: true, Pin: true},
		"pointer calls": {N: 100, Offsets: Pointer, Full: true},
		"null full":     {N: 100, Offsets: Null, Full: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := l.Run()
			if err != nil {
				t.Fatal(err)
			}
			if want := l.Expected(); got != want {
				t.Errorf("Run: %+v, Expected: %+v", got, want)
			}
		})
	}
	// The figures the tests were written for.
	if got, want := (Loop{Threads: 4, N: 20000, Offsets: Null}).Expected(), (Totals{Calls: 80000, Bytes: 64000 * 4096, EOF: 16000, Null: 80000}); got != want {
		t.Errorf("threads 4 x 20000: %+v, want %+v", got, want)
	}
}

// TestBuild: every C program builds, as the tests build it.
func TestBuild(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the C programs are x86-64 only")
	}
	gcc := testenv.NeedTool(t, "gcc")
	dir := t.TempDir()
	for name := range Programs {
		bin := filepath.Join(dir, name)
		if err := Build(gcc, name, bin); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath(bin); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := Build(gcc, "no-such-program", filepath.Join(dir, "x")); err == nil {
		t.Error("Build of an unknown program succeeded")
	}
}
