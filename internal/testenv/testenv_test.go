package testenv

import (
	"fmt"
	"os"
	"runtime"
	"testing"
)

// recorder is a testing.TB that records a skip or a failure instead of
// acting on it: Skip and Fatal end the goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// outcome runs f against a recorder in a goroutine of its own.
func outcome(t *testing.T, f func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestSkipOrFail(t *testing.T) {
	t.Setenv(RequireEnv, "")
	r := outcome(t, func(tb testing.TB) { SkipOrFail(tb, "port %d busy", 9464) })
	if r.skipped != "port 9464 busy" || r.failed != "" {
		t.Errorf("without %s: skipped %q, failed %q; want a skip with the reason", RequireEnv, r.skipped, r.failed)
	}
	t.Setenv(RequireEnv, "1")
	r = outcome(t, func(tb testing.TB) { SkipOrFail(tb, "port %d busy", 9464) })
	if want := "port 9464 busy, and " + RequireEnv + " is set"; r.failed != want || r.skipped != "" {
		t.Errorf("with %s: skipped %q, failed %q; want the failure %q", RequireEnv, r.skipped, r.failed, want)
	}
}

func TestRequirePrivileged(t *testing.T) {
	t.Setenv(RequireEnv, "1")
	r := outcome(t, func(tb testing.TB) { RequirePrivileged(tb) })
	if os.Geteuid() == 0 {
		if r.skipped != "" || r.failed != "" {
			t.Errorf("as root: skipped %q, failed %q; want neither", r.skipped, r.failed)
		}
		return
	}
	if want := "needs root: loads BPF programs or creates cgroups, and " + RequireEnv + " is set"; r.failed != want {
		t.Errorf("not root: failed %q, want %q", r.failed, want)
	}
}

func TestNeedTool(t *testing.T) {
	const missing = "sfwatch-no-such-tool"
	t.Setenv(RequireEnv, "1")
	t.Setenv(AllowMissingEnv, "")
	if r := outcome(t, func(tb testing.TB) { NeedTool(tb, missing) }); r.failed == "" {
		t.Errorf("a missing tool with %s set: skipped %q, want a failure", RequireEnv, r.skipped)
	}
	t.Setenv(AllowMissingEnv, "nginx,"+missing)
	if r := outcome(t, func(tb testing.TB) { NeedTool(tb, missing) }); r.skipped == "" || r.failed != "" {
		t.Errorf("a missing tool named in %s: failed %q, want a skip", AllowMissingEnv, r.failed)
	}
	t.Setenv(RequireEnv, "")
	t.Setenv(AllowMissingEnv, "")
	if r := outcome(t, func(tb testing.TB) { NeedTool(tb, missing) }); r.skipped == "" || r.failed != "" {
		t.Errorf("a missing tool without %s: failed %q, want a skip", RequireEnv, r.failed)
	}
	var path string
	if r := outcome(t, func(tb testing.TB) { path = NeedTool(tb, "sh") }); path == "" || r.skipped != "" || r.failed != "" {
		t.Errorf("sh: path %q, skipped %q, failed %q; want its path", path, r.skipped, r.failed)
	}
}
