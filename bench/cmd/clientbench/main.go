// Command clientbench measures what a run costs through the daemon against
// a run that loads its own programs, side by side (alternating, median of
// -reps): `sfwatch run --quiet -- true`, and the seed's test shape (a Go
// test that starts a net/http child under sfwatch.Run, fetches once and
// checks the calls: TestLinuxSendfile of the root package) standalone,
// through the daemon, and under strace -f (TestLinuxSendfileStrace). It
// starts its own daemon on a socket of its own, and needs root and the
// binaries of `make bench-clients` in -bin. See bench/README.md.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bench/.bin", "directory with sfwatch and sfwatch.test")
	reps := flag.Int("reps", 20, "repetitions of each row's commands, alternating")
	flag.Parse()
	if err := run(*bin, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "clientbench:", err)
		os.Exit(1)
	}
}

// timed runs argv with env added and returns its wall time; a failure is
// an error with its output.
func timed(env []string, argv ...string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out.String())
	}
	return d, nil
}

// row is one line of the table: its commands, run in turn reps times.
type row struct {
	name  string
	cases []runCase
}

type runCase struct {
	name string
	env  []string
	argv []string
	took []time.Duration
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func run(bin string, reps int) error {
	sfwatch := filepath.Join(bin, "sfwatch")
	seed := filepath.Join(bin, "sfwatch.test")
	dir, err := os.MkdirTemp("", "sfwatch-clientbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "sfwatch.sock")
	daemon := exec.Command(sfwatch, "daemon", "--socket", socket, "--lock", filepath.Join(dir, "lock"))
	var log bytes.Buffer
	daemon.Stderr = &log
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), " clients on "); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon did not start:\n%s", log.String())
		}
	}
	nothing := filepath.Join(dir, "none.sock")
	seedArgs := func(test string) []string {
		return []string{seed, "-test.run=^" + test + "$", "-test.count=1"}
	}
	rows := []row{
		{"`sfwatch run --quiet -- true`", []runCase{
			{name: "standalone", argv: []string{sfwatch, "run", "--quiet", "--standalone", "--", "true"}},
			{name: "through the daemon", argv: []string{sfwatch, "run", "--quiet", "--socket", socket, "--", "true"}},
		}},
		{"seed test: net/http child, one fetch", []runCase{
			{name: "standalone", env: []string{"SFWATCH_SOCKET=" + nothing}, argv: seedArgs("TestLinuxSendfile")},
			{name: "through the daemon", env: []string{"SFWATCH_SOCKET=" + socket}, argv: seedArgs("TestLinuxSendfile")},
			{name: "strace -f", argv: seedArgs("TestLinuxSendfileStrace")},
		}},
	}
	// A warm-up of each, unmeasured: page cache, the daemon's first lane.
	for _, r := range rows {
		for _, c := range r.cases {
			if _, err := timed(c.env, c.argv...); err != nil {
				return err
			}
		}
	}
	for range reps {
		for i := range rows {
			for j := range rows[i].cases {
				c := &rows[i].cases[j]
				d, err := timed(c.env, c.argv...)
				if err != nil {
					return err
				}
				c.took = append(c.took, d)
			}
		}
	}
	fmt.Printf("| what | how | median of %d | min | max | standalone / this |\n|---|---|---|---|---|---|\n", reps)
	for _, r := range rows {
		base := median(r.cases[0].took)
		for _, c := range r.cases {
			m := median(c.took)
			fmt.Printf("| %s | %s | %s | %s | %s | %.1fx |\n", r.name, c.name, ms(m), ms(slices.Min(c.took)), ms(slices.Max(c.took)), float64(base)/float64(m))
		}
	}
	return nil
}
