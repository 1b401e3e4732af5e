package main

// Who may run sfwatch, and as whom: the privilege decision; doctor and run
// agreeing for a non-root user with or without the four capabilities; run
// refusing without root in one line; --user and sudo's user running the
// command as that user, still traced.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

func TestPrivilegeDecision(t *testing.T) {
	all := uint64(1)<<unix.CAP_BPF | 1<<unix.CAP_PERFMON | 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_DAC_OVERRIDE
	for _, tc := range []struct {
		euid    int
		eff     uint64
		ok      string
		missing string // in the error
	}{
		{0, ^uint64(0), "root", ""},
		{0, all, "root", ""},
		{1000, all, "uid 1000 with CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE", ""},
		{1000, all &^ (1 << unix.CAP_DAC_OVERRIDE), "", "uid 1000 lacks CAP_DAC_OVERRIDE:"},
		{1000, 1 << unix.CAP_BPF, "", "uid 1000 lacks CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE:"},
		{65534, 0, "", "uid 65534 lacks CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE:"},
		{0, all &^ (1 << unix.CAP_BPF), "", "root lacks CAP_BPF:"}, // a container's root
	} {
		got, err := privilegeDecision(tc.euid, tc.eff)
		if tc.missing == "" {
			if err != nil || got != tc.ok {
				t.Errorf("uid %d caps %#x: %q, %v; want %q", tc.euid, tc.eff, got, err, tc.ok)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.missing) || !strings.HasPrefix(err.Error(), "needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE)") {
			t.Errorf("uid %d caps %#x: %q, %v; want an error saying %q", tc.euid, tc.eff, got, err, tc.missing)
		}
	}
}

// TestPrivilegesAgree: doctor and run decide alike for a non-root user:
// with the four capabilities (ambient, across exec) both go ahead and run
// traces; with one missing, both name it and run creates nothing.
func TestPrivilegesAgree(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin, dir := sfwatchForNobody(t)
	four := []uintptr{unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_SYS_ADMIN, unix.CAP_DAC_OVERRIDE}
	asNobody := func(caps []uintptr, args ...string) result { return runAsNobody(t, bin, dir, caps, args...) }
	privilegesLine := func(doctor string) string {
		for _, line := range strings.Split(doctor, "\n") {
			if strings.HasPrefix(line, "privileges ") {
				return line
			}
		}
		return ""
	}

	d := asNobody(four, "doctor")
	if line := privilegesLine(d.stdout); d.code != 0 || !strings.Contains(line, " ok ") || !strings.Contains(line, "uid 65534 with CAP_BPF") {
		t.Errorf("doctor with the four capabilities: exit %d, privileges line %q; want 0 and ok for uid 65534\n%s%s", d.code, line, d.stdout, d.stderr)
	}
	r := asNobody(four, "run", "-c", "--", "true")
	if r.code != 0 || !strings.HasSuffix(r.stderr, accountingLine(0, 0, 0)+"\n") {
		t.Errorf("run with the four capabilities: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	three := four[:3] // no CAP_DAC_OVERRIDE: the group's mkdir would fail
	d = asNobody(three, "doctor")
	if line := privilegesLine(d.stdout); d.code != 1 || !strings.Contains(line, "MISSING") || !strings.Contains(line, "lacks CAP_DAC_OVERRIDE") {
		t.Errorf("doctor without CAP_DAC_OVERRIDE: exit %d, privileges line %q; want 1 and MISSING naming it", d.code, line)
	}
	r = asNobody(three, "run", "--", "true")
	if r.code != exitFailed || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "run needs root") || !strings.Contains(r.stderr, "lacks CAP_DAC_OVERRIDE: run it with sudo") {
		t.Errorf("run without CAP_DAC_OVERRIDE: exit %d, stderr %q; want 125 and one line naming it", r.code, r.stderr)
	}
}

// TestRunNotRoot: without root and without a daemon, run says so in one
// line, naming the daemon, and exits 125.
func TestRunNotRoot(t *testing.T) {
	testenv.RequirePrivileged(t) // to switch to nobody
	t.Parallel()
	bin, dir := sfwatchForNobody(t)
	for _, args := range [][]string{
		{"run", "--", "true"},
		{"run", "-c", "--expect", "calls>=1", "--", "true"},
		{"selftest"},
		{"attach", "--pid", "1"},
	} {
		r := runAsNobody(t, bin, dir, nil, args...)
		// Without a daemon (none listens on the default socket here), a
		// run says how to start one; attach is root's either way.
		daemonHint := args[0] == "attach" || strings.Contains(r.stderr, "start a daemon ('sudo sfwatch daemon')")
		if r.code != exitFailed || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !daemonHint ||
			!strings.Contains(r.stderr, "needs root") || !strings.Contains(r.stderr, "sudo") || !strings.Contains(r.stderr, args[0]) {
			t.Errorf("%v as nobody: exit %d, stdout %q, stderr %q; want 125 and one line saying %s needs root and sudo",
				args, r.code, r.stdout, r.stderr, args[0])
		}
	}
}

// TestRunUser: --user runs the command as that user, still traced; under
// sudo, without --user, it runs as sfwatch does (root), as strace's.
func TestRunUser(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	// A copy of this binary that nobody can reach and run.
	bin, _ := copyForNobody(t, os.Args[0], filepath.Base(os.Args[0]))
	for _, tc := range []struct {
		name  string
		env   []string
		flags []string
		uid   string
	}{
		{"--user", nil, []string{"--user", "65534"}, "65534"},
		{"sudo", []string{"SUDO_UID=65534", "SUDO_GID=65534"}, nil, "0"},
		{"sudo --user", []string{"SUDO_UID=65534", "SUDO_GID=65534"}, []string{"--user", "65534"}, "65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"run", "--format", "json"}, tc.flags...), "--", bin, "offsets")
			r := sfwatch(t, append(workloadEnv(), tc.env...), args...)
			if r.code != 0 || !strings.Contains(r.stdout, "\nuid "+tc.uid+"\n") {
				t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			calls := offsetsManifest(t, r.stdout)
			out := lines(r.stderr)
			if len(out) != len(calls)+1 || out[len(calls)] != accountingLine(9, 9, 0) {
				t.Fatalf("stderr:\n%s", r.stderr)
			}
			for i, e := range parseJSONEvents(t, strings.Join(out[:len(calls)], "\n")) {
				if c := calls[i]; e.TID != c.Tid || e.Ret != c.Ret || e.OutFD != c.OutFD {
					t.Errorf("event %d: %+v, want %+v", i, e, c)
				}
			}
		})
	}
}
