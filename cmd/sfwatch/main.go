// Command sfwatch proves, with eBPF and without ptrace, what a program does
// with sendfile(2).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/child"
)

// Exit codes, as documented in the README and in usage.
const (
	exitUsage        = 2   // bad flags, bad expression, missing command
	exitExpectFailed = 3   // an --expect did not hold
	exitInconclusive = 4   // none failed, but one could not be decided (events lost)
	exitFailed       = 125 // sfwatch itself failed
	exitNotExec      = 126 // the command is not executable
	exitNotFound     = 127 // the command was not found
)

const usage = `sfwatch proves, with eBPF and without ptrace, what a program does with sendfile(2).

Usage:
  sfwatch run [flags] -- CMD [ARGS...]   start CMD in a new cgroup and trace its sendfile calls
  sfwatch attach --cgroup PATH | --pid PID
                                         watch an existing group until SIGINT/SIGTERM
  sfwatch daemon --watch PATH...         one observer for the machine: totals per group
  sfwatch strace [strace's options] CMD  as strace, for what sfwatch can honour (also
                                         when invoked as strace): 'sfwatch strace -h'
  sfwatch doctor [--json]                check that this machine can trace
  sfwatch selftest                       trace a built-in workload and check every call
  sfwatch version                        print the version

Run 'sfwatch run --help' for the flags of run.

Exit codes: the child's own status (128+N when killed by signal N);
2 bad usage, 3 an --expect failed, 4 an --expect was inconclusive,
125 sfwatch failed, 126 CMD not executable, 127 CMD not found.
`

func main() {
	ctx := context.Background()
	args := os.Args[1:]
	if isStraceName(os.Args[0]) {
		args = append([]string{straceCommand}, args...)
	}
	if err := run(ctx, args); err != nil {
		os.Exit(exitStatus(err))
	}
}

// exitError carries an exit code; a nil err means the status is all there
// is to say (the child's own exit code, say).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitStatus prints err as one line (when there is something to say) and
// returns the exit code that goes with it.
func exitStatus(err error) int {
	code := exitFailed
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.Is(err, child.ErrNotFound):
		code = exitNotFound
	case errors.Is(err, child.ErrNotExecutable):
		code = exitNotExec
	}
	if ee == nil || ee.err != nil {
		stderr.bound() // exiting: a blocked stderr must not keep us
		fmt.Fprintf(stderr, "sfwatch: %v\n", err)
	}
	return code
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("missing command; try 'sfwatch run -- CMD' or 'sfwatch --help'")
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:])
	case "attach":
		return attachCommand(ctx, args[1:])
	case "daemon":
		return daemonCommand(ctx, args[1:])
	case straceCommand:
		return straceMain(ctx, args[1:])
	case "doctor":
		return doctorCommand(args[1:])
	case "selftest":
		return selftestCommand(ctx, args[1:])
	case selftestChildCommand:
		return selftestChild(args[1:])
	case watchdogCommand:
		return cgroup.RunWatchdog(args[1:])
	case "version", "--version":
		fmt.Println(versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
		return nil
	}
	return usageError("unknown command %q; try 'sfwatch run -- CMD' or 'sfwatch --help'", args[0])
}
