package main

// The C test programs (internal/testworkload/c): building them (or taking
// them prebuilt, in a kernel guest without gcc), and the arguments
// signals.c takes.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testenv"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// prebuildEnvVar names a directory: TestMain builds the C programs into
// it and exits (scripts/kernels, for guests without gcc). prebuiltEnvVar
// names a directory that holds them and sfwatch, used instead of building.
const (
	prebuildEnvVar = "SFWATCH_TEST_PREBUILD"
	prebuiltEnvVar = "SFWATCH_TEST_PREBUILT"
)

// buildTestProgram returns the C program NAME of internal/testworkload, an
// x86-64 program, built with gcc into a temporary directory, or taken from
// $SFWATCH_TEST_PREBUILT.
func buildTestProgram(t *testing.T, name string) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("%s.c is x86-64 only", name)
	}
	if _, ok := testworkload.Programs[name]; !ok {
		t.Fatalf("%s.c is not in testworkload.Programs: a prebuilt set would lack it", name)
	}
	if dir := os.Getenv(prebuiltEnvVar); dir != "" {
		return filepath.Join(dir, name)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := testworkload.Build(testenv.NeedTool(t, "gcc"), name, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// prebuildTestPrograms builds every C program into dir; it returns an exit
// code.
func prebuildTestPrograms(dir string) int {
	for name := range testworkload.Programs {
		if err := testworkload.Build("gcc", name, filepath.Join(dir, name)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// signalKinds are the dispositions signals.c knows: a handler with
// SA_RESTART, a plain handler, ignored, and the default action of SIGSTOP.
const signalKinds = "rpis"

// burstRound turns an order of kinds into signals.c's round argument.
// Within one burst the kernel delivers the lower signal number first, and
// the stop is always SIGSTOP (19), so the other kinds take numbers below
// 19 before it and above 19 after it.
func burstRound(kinds string) string {
	low := []unix.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.SIGALRM}
	high := []unix.Signal{unix.SIGURG, unix.SIGWINCH, unix.SIGIO}
	var parts []string
	stopSeen := false
	for _, k := range kinds {
		var sig unix.Signal
		switch {
		case k == 's':
			sig, stopSeen = unix.SIGSTOP, true
		case stopSeen || !strings.ContainsRune(kinds, 's'):
			sig, high = high[0], high[1:]
		default:
			sig, low = low[0], low[1:]
		}
		parts = append(parts, fmt.Sprintf("%d:%c", sig, k))
	}
	return strings.Join(parts, ",")
}

// signalOrders lists every order of one, two or three kinds, each kind at
// most once, plus two handlers of the same kind.
func signalOrders() []string {
	orders := []string{"rr", "pp"}
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			orders = append(orders, prefix)
		}
		if len(prefix) == 3 {
			return
		}
		for _, k := range signalKinds {
			if !strings.ContainsRune(prefix, k) {
				grow(prefix + string(k))
			}
		}
	}
	grow("")
	return orders
}
