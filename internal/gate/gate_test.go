package gate

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// installed is the gate installed in a directory of the test's.
func installed(t *testing.T) string {
	t.Helper()
	path, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// startHeld starts cmd held at the gate, as child.Start does.
func startHeld(t *testing.T, cmd *exec.Cmd, gatePath string) *Hold {
	t.Helper()
	h, err := Prepare(cmd, gatePath)
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	h.Started()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestReleaseRunsTheCommand: held, the command has not run; released, it
// runs with its own arguments and environment, and the caller's extra
// files keep their numbers (the gate's pipe is not among them); the
// caller's Cmd is as it was.
func TestReleaseRunsTheCommand(t *testing.T) {
	gatePath := installed(t)
	extra := filepath.Join(t.TempDir(), "extra")
	if err := os.WriteFile(extra, []byte("from fd 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(extra)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", `echo "$0 $GATE_TEST"; cat <&3; if [ -e /proc/self/fd/4 ]; then echo fd 4 open; else echo fd 4 closed; fi`, "arg0")
	cmd.Env = []string{"GATE_TEST=env kept"}
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout = &out
	h := startHeld(t, cmd, gatePath)
	if cmd.Path != "/bin/sh" || len(cmd.ExtraFiles) != 1 || cmd.Args[0] != "/bin/sh" {
		t.Errorf("the caller's Cmd after Start: %q %q, %d extra files", cmd.Path, cmd.Args, len(cmd.ExtraFiles))
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe")
	if exe != gatePath {
		t.Errorf("held child runs %q, want the gate %q", exe, gatePath)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// The gate's pipe was fd 4, after the extra file: closed before the
	// exec.
	if got := out.String(); got != "arg0 env kept\nfrom fd 3\nfd 4 closed\n" {
		t.Errorf("output %q", got)
	}
}

// TestAbortRunsNothing: a held child let go without its byte exits 125
// without running the command; one whose command vanished meanwhile
// exits 127 and says so.
func TestAbortRunsNothing(t *testing.T) {
	gatePath := installed(t)
	marker := filepath.Join(t.TempDir(), "ran")
	cmd := exec.Command("/bin/sh", "-c", "touch "+marker)
	h := startHeld(t, cmd, gatePath)
	h.Abort()
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != ExitAborted {
		t.Errorf("aborted: %v, exit %d; want %d", err, cmd.ProcessState.ExitCode(), ExitAborted)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran")
	}

	gone := filepath.Join(t.TempDir(), "gone")
	cmd = exec.Command(gone)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	h = startHeld(t, cmd, gatePath)
	h.Release()
	cmd.Wait()
	if cmd.ProcessState.ExitCode() != 127 || !strings.Contains(stderr.String(), gone+": no such file") {
		t.Errorf("a vanished command: exit %d, stderr %q", cmd.ProcessState.ExitCode(), stderr.String())
	}
}
