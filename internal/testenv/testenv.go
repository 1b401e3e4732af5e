// Package testenv is the one gate of the tests that need what an ordinary
// user or machine lacks: root (BPF programs, cgroups) or a tool such as
// strace or nginx. Without it a test skips and says why; with
// SFWATCH_REQUIRE_PRIVILEGED set (make test, CI, the kernel guests) it fails
// instead, because there a skip would hide that nothing was tested. A tool
// named in SFWATCH_ALLOW_MISSING (comma-separated: a booted kernel's
// initramfs has no nginx) skips even then.
//
// Only tests import it.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	// RequireEnv, when set, turns every skip of this package into a failure.
	RequireEnv = "SFWATCH_REQUIRE_PRIVILEGED"
	// AllowMissingEnv names tools (comma-separated) whose absence skips a
	// test even when RequireEnv is set.
	AllowMissingEnv = "SFWATCH_ALLOW_MISSING"
)

// Required reports whether a test that cannot run must fail rather than
// skip: SFWATCH_REQUIRE_PRIVILEGED is set.
func Required() bool { return os.Getenv(RequireEnv) != "" }

// RequirePrivileged skips t, with the reason, unless the process is root;
// when SFWATCH_REQUIRE_PRIVILEGED is set it fails t instead.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	SkipOrFail(t, "needs root: loads BPF programs or creates cgroups")
}

// SkipOrFail skips t with the reason, or fails it with the reason when
// SFWATCH_REQUIRE_PRIVILEGED is set.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s, and %s is set", reason, RequireEnv)
	}
	t.Skip(reason)
}

// NeedTool returns the path of a program the test needs. Without it the
// test skips, unless SFWATCH_REQUIRE_PRIVILEGED is set, where it fails,
// except for a tool named in SFWATCH_ALLOW_MISSING, which skips even then.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if Required() && !slices.Contains(strings.Split(os.Getenv(AllowMissingEnv), ","), name) {
		t.Fatalf("needs %s, and %s is set", name, RequireEnv)
	}
	t.Skipf("needs %s: %v", name, err)
	return ""
}
