package sfwatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch"
	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// TestRunCommandErrors: a missing command and one that cannot be executed
// give errors of the standard library's kinds, before anything is traced
// (no privilege needed).
func TestRunCommandErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "file.txt")
	if err := os.WriteFile(text, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	standalone := &sfwatch.Options{Via: sfwatch.Standalone}
	if _, err := sfwatch.Run(context.Background(), exec.Command("sfwatch-no-such-command"), standalone); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("a missing command: %v; want errors.Is exec.ErrNotFound", err)
	}
	if _, err := sfwatch.Run(context.Background(), exec.Command(text), standalone); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("a file that is not executable: %v; want errors.Is fs.ErrPermission", err)
	}
}

// TestRunMaxEvents: Result.Events keeps the first MaxEvents calls, in
// order, and counts the others; the summary counts them all.
func TestRunMaxEvents(t *testing.T) {
	if err := sfwatch.Supported(); err != nil {
		testenv.SkipOrFail(t, "privileged test cannot run: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoopChild$")
	cmd.Env = append(os.Environ(), "SFWATCH_TEST_LOOP=300")
	res, err := sfwatch.Run(context.Background(), cmd, &sfwatch.Options{MaxEvents: 40})
	if err != nil {
		t.Fatal(err)
	}
	want := testworkload.Loop{N: 300, Offsets: testworkload.Alternate}.Expected()
	if res.Summary.Calls != want.Calls || len(res.Events) != 40 || res.EventsDropped != want.Calls-40 {
		t.Fatalf("%d calls, %d events kept, %d dropped; want %d, 40, %d", res.Summary.Calls, len(res.Events), res.EventsDropped, want.Calls, want.Calls-40)
	}
	for i, e := range res.Events[1:] {
		if e.Start.Before(res.Events[i].Start) {
			t.Fatalf("event %d starts before event %d: not the first calls in order", i+1, i)
		}
	}
}

// TestRunCancelGraceful: cancelling Run's context calls the command's own
// cmd.Cancel first (SIGTERM here, which it handles and exits 0), and
// kills only once cmd.WaitDelay has passed; without cmd.Cancel, the
// command is killed at once (137).
func TestRunCancelGraceful(t *testing.T) {
	if err := sfwatch.Supported(); err != nil {
		testenv.SkipOrFail(t, "privileged test cannot run: %v", err)
	}
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("cancel=%v", graceful), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ready := filepath.Join(t.TempDir(), "ready")
			cmd := exec.CommandContext(context.Background(), os.Args[0], "-test.run=^TestTermChild$")
			cmd.Env = append(os.Environ(), "SFWATCH_TEST_TERM="+ready)
			var out bytes.Buffer
			cmd.Stdout = &out
			if graceful {
				cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
				cmd.WaitDelay = 20 * time.Second
			}
			done := make(chan struct{})
			var res *sfwatch.Result
			var err error
			go func() {
				res, err = sfwatch.Run(ctx, cmd, nil)
				close(done)
			}()
			// The child handles SIGTERM from here on.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the child never got ready")
				}
			}
			start := time.Now()
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
			if err != nil {
				t.Fatal(err)
			}
			if graceful && (res.ExitCode != 0 || !strings.Contains(out.String(), "graceful") || time.Since(start) > 10*time.Second) {
				t.Errorf("with cmd.Cancel: exit %d, output %q, after %v; want 0 and a graceful stop before WaitDelay", res.ExitCode, out.String(), time.Since(start))
			}
			if !graceful && res.ExitCode != 128+int(syscall.SIGKILL) {
				t.Errorf("without cmd.Cancel: exit %d; want 137", res.ExitCode)
			}
		})
	}
}

// TestTermChild waits for SIGTERM and exits 0 saying so; run only by
// TestRunCancelGraceful.
func TestTermChild(t *testing.T) {
	if os.Getenv("SFWATCH_TEST_TERM") == "" {
		return
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if err := os.WriteFile(os.Getenv("SFWATCH_TEST_TERM"), nil, 0o644); err != nil {
		os.Exit(2)
	}
	select {
	case <-term:
		fmt.Println("graceful")
		os.Exit(0)
	case <-time.After(time.Minute):
		os.Exit(1)
	}
}

// TestStart: Start returns once the command runs and is watched: Pid is
// its pid without a race, Summary counts its calls exactly as they are
// made, Events delivers them as they come and is closed at the end, and
// Wait returns what Run would.
func TestStart(t *testing.T) {
	if err := sfwatch.Supported(); err != nil {
		testenv.SkipOrFail(t, "privileged test cannot run: %v", err)
	}
	dir := t.TempDir()
	goOn := filepath.Join(dir, "go-on")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPhasesChild$")
	cmd.Env = append(os.Environ(), "SFWATCH_TEST_PHASES="+goOn)
	var out bytes.Buffer
	cmd.Stdout = &out
	tr, err := sfwatch.Start(context.Background(), cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := testworkload.Loop{N: 100, Offsets: testworkload.Alternate}.Expected()
	var seen int
	for deadline := time.Now().Add(30 * time.Second); tr.Summary().Calls < first.Calls; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Summary never reached the first %d calls: %+v", first.Calls, tr.Summary())
		}
	}
	if s := tr.Summary(); s.Calls != first.Calls || s.Bytes != first.Bytes {
		t.Errorf("Summary between the phases: %d calls, %d bytes; want %d, %d", s.Calls, s.Bytes, first.Calls, first.Bytes)
	}
	for ; uint64(seen) < first.Calls; seen++ {
		select {
		case e := <-tr.Events():
			if e.PID != tr.Pid() {
				t.Fatalf("event of pid %d, want the command's %d", e.PID, tr.Pid())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Events delivered %d of the first %d calls", seen, first.Calls)
		}
	}
	if err := os.WriteFile(goOn, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range tr.Events() {
		seen++
	}
	res, err := tr.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Summary.Calls != 2*first.Calls || uint64(seen)+tr.EventsMissed() != 2*first.Calls || len(res.Events) != int(2*first.Calls) {
		t.Errorf("exit %d, %d calls, %d events read and %d missed, %d in the result; want 0 and %d each", res.ExitCode, res.Summary.Calls, seen, tr.EventsMissed(), len(res.Events), 2*first.Calls)
	}
	if tr.Pid() != cmd.Process.Pid || !strings.Contains(out.String(), fmt.Sprintf("pid %d\n", tr.Pid())) {
		t.Errorf("Pid %d; the command says %q", tr.Pid(), out.String())
	}
}

// TestPhasesChild makes 100 calls, waits for the file its environment
// names, makes 100 more; run only by TestStart.
func TestPhasesChild(t *testing.T) {
	goOn := os.Getenv("SFWATCH_TEST_PHASES")
	if goOn == "" {
		return
	}
	fmt.Printf("pid %d\n", os.Getpid())
	loop := testworkload.Loop{N: 100, Offsets: testworkload.Alternate}
	if _, err := loop.Run(); err != nil {
		os.Exit(1)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(goOn); err == nil {
			break
		}
		if time.Now().After(deadline) {
			os.Exit(2)
		}
	}
	if _, err := loop.Run(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}
