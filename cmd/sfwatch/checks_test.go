package main

// Tests that every problem with the flags is found before anything is
// created or started, and that what can only fail at the end (a report on
// a full device) does not cost the command's exit status.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// readOnlyDir mounts a read-only tmpfs for the test: a place that refuses
// files even to root.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Fatalf("mounting a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestRunCheckedBeforeStart: output files that cannot be written, two
// flags naming one file, a ring buffer too large, a malformed metrics
// address and an unknown user are each bad usage: exit 2, one line, and
// no output file, bound port, group, program or child.
func TestRunCheckedBeforeStart(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.json")
	if err := os.WriteFile(existing, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	hardLink := filepath.Join(dir, "hardlink.json")
	if err := os.Link(existing, hardLink); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(dir, "dirlink")
	if err := os.Symlink(dir, dirLink); err != nil {
		t.Fatal(err)
	}
	fileLink := filepath.Join(dir, "filelink.json")
	if err := os.Symlink(existing, fileLink); err != nil {
		t.Fatal(err)
	}
	ro := readOnlyDir(t)
	out := filepath.Join(dir, "events.txt")
	for _, tc := range []struct {
		name  string
		flags []string // -o out and --metrics-addr are added unless given
		want  []string // in the one line
	}{
		{"report-is-dir", []string{"--report", dir}, []string{"--report " + dir, "is a directory"}},
		{"junit-is-dir", []string{"--junit", dir + "/"}, []string{"--junit", "is a directory"}},
		{"output-is-dir", []string{"-o", dir}, []string{"-o " + dir, "is a directory"}},
		{"report-read-only", []string{"--report", filepath.Join(ro, "r.json")}, []string{"--report", "cannot write in " + ro, "read-only file system"}},
		{"junit-read-only", []string{"--junit", filepath.Join(ro, "j.xml")}, []string{"--junit", "cannot write in " + ro}},
		{"ringbuf-2^32", []string{"--ringbuf-size", "4294967296"}, []string{"--ringbuf-size", "4294967296", "1073741824"}},
		{"ringbuf-2^31", []string{"--ringbuf-size", "2147483648"}, []string{"--ringbuf-size", "2147483648"}},
		{"metrics-addr-no-port", []string{"--metrics-addr", "127.0.0.1"}, []string{"--metrics-addr 127.0.0.1", "HOST:PORT"}},
		{"metrics-addr-bad-port", []string{"--metrics-addr", "127.0.0.1:99999"}, []string{"--metrics-addr 127.0.0.1:99999", "port"}},
		{"metrics-addr-junk", []string{"--metrics-addr", "::1::"}, []string{"--metrics-addr ::1::"}},
		{"unknown-user", []string{"--user", "no-such-user-sfwatch"}, []string{"no-such-user-sfwatch", "unknown user"}},
		{"same-file", []string{"-o", out, "--report", out}, []string{"-o " + out, "--report " + out, "same file"}},
		{"same-file-spelled", []string{"-o", out, "--junit", dir + "/./" + filepath.Base(out)}, []string{"--junit", "same file"}},
		{"same-file-dir-symlink", []string{"-o", out, "--report", filepath.Join(dirLink, filepath.Base(out))}, []string{"same file"}},
		{"same-file-hard-link", []string{"-o", existing, "--report", hardLink}, []string{"same file"}},
		{"same-file-symlink", []string{"--report", existing, "--junit", fileLink}, []string{"same file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "started")
			addr := pmAddr(t)
			args := []string{"run"}
			if !strings.Contains(strings.Join(tc.flags, " "), "-o ") {
				args = append(args, "-o", out)
			}
			if !strings.Contains(strings.Join(tc.flags, " "), "--metrics-addr") {
				args = append(args, "--metrics-addr", addr)
			}
			args = append(append(args, tc.flags...), "--", "touch", marker)
			r := sfwatch(t, nil, args...)
			if r.code != exitUsage || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "sfwatch: run: ") {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and one line", r.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not say %q", r.stderr, w)
				}
			}
			for _, f := range []string{marker, out} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s exists: something was created or started", f)
				}
			}
			if data, _ := os.ReadFile(existing); string(data) != "keep" {
				t.Errorf("%s was overwritten: %q", existing, data)
			}
			if entries, _ := os.ReadDir(ro); len(entries) != 0 {
				t.Errorf("left %v in the read-only dir", entries)
			}
			pmAssertPortFree(t, addr)
		})
	}
	// The checks leave nothing in the directories they try.
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "dirlink existing.json filelink.json hardlink.json" {
		t.Errorf("%s holds %v, want only the test's own files", dir, names)
	}
}

// TestRunReportOnFullDevice: a report that fails at the end (/dev/full)
// is one line on stderr; the JUnit file is still written and the exit
// code is still the command's.
func TestRunReportOnFullDevice(t *testing.T) {
	testenv.RequirePrivileged(t)
	junit := filepath.Join(t.TempDir(), "j.xml")
	r := sfwatch(t, nil, "run", "--quiet", "--expect", "errors==0", "--report", "/dev/full", "--junit", junit, "--", "sh", "-c", "exit 7")
	if r.code != 7 {
		t.Errorf("exit %d, want the command's 7; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "sfwatch: writing report /dev/full: ") || !strings.Contains(r.stderr, "no space left on device") {
		t.Errorf("stderr does not say the report failed:\n%s", r.stderr)
	}
	if j := readJUnit(t, junit, 7); j.Tests != 1 || j.Failures != 0 {
		t.Errorf("junit: %+v, want 1 test, 0 failures", j)
	}
}
