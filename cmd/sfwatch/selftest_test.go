package main

// The subcommands that check this machine: selftest passes, and every
// required check of doctor passes, in text and in JSON.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestSelftest: the built-in self-test passes here.
func TestSelftest(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := sfwatch(t, nil, "selftest")
	if r.code != 0 || !strings.Contains(r.stderr, "sfwatch selftest: PASS: ") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// TestDoctor: every required check passes, in text and in JSON.
func TestDoctor(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	r := sfwatch(t, nil, "doctor")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "CHECK ") || strings.Contains(r.stdout, "MISSING") {
		t.Errorf("doctor: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = sfwatch(t, nil, "doctor", "--json")
	if r.code != 0 {
		t.Fatalf("doctor --json: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	var checks []struct {
		Check    string `json:"check"`
		OK       *bool  `json:"ok"`
		Required *bool  `json:"required"`
		Detail   string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	seen := map[string]bool{}
	for _, c := range checks {
		if c.OK == nil || c.Required == nil {
			t.Errorf("check %q lacks ok or required", c.Check)
			continue
		}
		seen[c.Check] = true
		if *c.Required && !*c.OK {
			t.Errorf("required check %q failed: %s", c.Check, c.Detail)
		}
	}
	want := []string{"privileges", "kernel", "tracefs", "attach mode", "tracepoint signal_deliver",
		"cgroup2", "ring buffer", "cgroup group", "CLONE_INTO_CGROUP", "BPF programs"}
	if loader.AttachMode().Kprobes {
		want = append(want, "kprobe "+loader.KprobeSymbol)
	} else {
		want = append(want, "tracepoint sys_enter_sendfile64", "tracepoint sys_exit_sendfile64")
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("doctor --json has no check %q", name)
		}
	}
}
