package main

// How sfwatch run renders what a command did: the offsets workload makes one
// call of each kind (NULL and pointer offsets, a short transfer, EOF, EBADF,
// ESPIPE, EINVAL, count 0) and prints its own account of them; every line of
// strace text, JSON Lines, -T, -ttt, -o FILE and the -c table is checked
// against it.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestRunOffsets: each case runs the offsets workload under sfwatch with
// its flags and checks what sfwatch printed and wrote against the
// workload's own account of its calls (offsetsManifest). The cases were
// tests of their own: TestRunOffsetsText is TestRunOffsets/Text,
// TestRunOffsetsJSON is TestRunOffsets/JSON, TestRunDurations is
// TestRunOffsets/Durations, and so on. One alone:
// go test -run '^TestRunOffsets$/^Text$' ./cmd/sfwatch
func TestRunOffsets(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	for name, tc := range map[string]testDef{
		// Text: each of the workload's calls appears as exactly the
		// strace line for it, with the right thread, and nothing else does.
		"Text": {
			generateEvent: func(t *testing.T, dir string) caseRun { return runOffsets(t, dir) },
			validateEvent: func(t *testing.T, r caseRun) {
				if r.code != 0 {
					t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
				}
				calls := offsetsManifest(t, r.stdout)
				want := make([]string, 0, len(calls)+1)
				for _, c := range calls {
					want = append(want, straceLine(t, c, testComm()))
				}
				want = append(want, accountingLine(9, 9, 0))
				if got := lines(r.stderr); !slices.Equal(got, want) {
					t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				// Spot checks written out in full, independent of straceLine:
				// "= " at column 40 of strace -f's line, "[pid %5d] " and the call.
				comm := testComm()
				tid := calls[1].Tid
				w := 40 - len(fmt.Sprintf("[pid %5d] ", tid))
				for _, s := range []string{
					fmt.Sprintf("[pid %5d<%s>] %-*s= 4096\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, [0] => [4096], 4096) ", calls[1].OutFD, calls[1].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= 100\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, [16284] => [16384], 4096) ", calls[2].OutFD, calls[2].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= 0\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, [16384], 4096) ", calls[3].OutFD, calls[3].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= -1 EBADF (Bad file descriptor)\n", tid, comm, w, fmt.Sprintf("sendfile(999, %d, NULL, 4096) ", calls[4].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= -1 ESPIPE (Illegal seek)\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, [0], 4096) ", calls[5].OutFD, calls[5].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= -1 EINVAL (Invalid argument)\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, NULL, 4096) ", calls[6].OutFD, calls[6].InFD)),
					fmt.Sprintf("[pid %5d<%s>] %-*s= 0\n", tid, comm, w, fmt.Sprintf("sendfile(%d, %d, [0], 0) ", calls[7].OutFD, calls[7].InFD)),
				} {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("stderr lacks %q", s)
					}
				}
				if m := seedRegexp.FindAllString(r.stderr, -1); len(m) != 2 { // NULL 4096 and NULL EOF
					t.Errorf("the seed's regexp matched %d lines (%q), want the 2 successful NULL-offset calls", len(m), m)
				}
			},
		},
		// JSON: the same calls as JSON Lines, every field exact, with
		// -ttt's wall-clock time.
		"JSON": {
			generateEvent: func(t *testing.T, dir string) caseRun { return runOffsets(t, dir, "--format", "json", "-ttt") },
			validateEvent: func(t *testing.T, r caseRun) {
				begin, end := r.begin, r.end
				if r.code != 0 {
					t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
				}
				calls := offsetsManifest(t, r.stdout)
				pid := workloadPID(t, r.stdout)
				out := lines(r.stderr)
				if len(out) != len(calls)+1 || out[len(out)-1] != accountingLine(9, 9, 0) {
					t.Fatalf("stderr: want %d JSON lines and the accounting line, got:\n%s", len(calls), r.stderr)
				}
				evs := parseJSONEvents(t, strings.Join(out[:len(calls)], "\n"))
				for i, c := range calls {
					e := evs[i]
					where := fmt.Sprintf("event %d (%+v)", i, c)
					if e.PID != uint32(pid) || e.TID != c.Tid || e.Comm != testComm() {
						t.Errorf("%s: pid %d tid %d comm %q, want %d %d %q", where, e.PID, e.TID, e.Comm, pid, c.Tid, testComm())
					}
					if e.OutFD != c.OutFD || e.InFD != c.InFD || e.Count != c.Count || e.Ret != c.Ret {
						t.Errorf("%s: out_fd %d in_fd %d count %d ret %d", where, e.OutFD, e.InFD, e.Count, e.Ret)
					}
					switch {
					case c.Null && e.Offset != nil:
						t.Errorf("%s: offset %+v, want null", where, *e.Offset)
					case !c.Null && (e.Offset == nil || e.Offset.Before == nil || e.Offset.After == nil):
						t.Errorf("%s: offset %+v, want before and after", where, e.Offset)
					case !c.Null && (*e.Offset.Before != c.OffsetBefore || *e.Offset.After != c.OffsetAfter):
						t.Errorf("%s: offset %d => %d, want %d => %d", where, *e.Offset.Before, *e.Offset.After, c.OffsetBefore, c.OffsetAfter)
					}
					wantClass := "ok"
					switch {
					case c.Ret < 0:
						wantClass = "error"
						if e.Errno == nil || *e.Errno != errnoNames[c.Ret] {
							t.Errorf("%s: errno %v, want %s", where, e.Errno, errnoNames[c.Ret])
						}
					case c.Ret == 0 && c.Count == 0:
						wantClass = "empty"
					case c.Ret == 0:
						wantClass = "eof"
					case uint64(c.Ret) < c.Count:
						wantClass = "short"
					}
					if c.Ret >= 0 && e.Errno != nil {
						t.Errorf("%s: errno %q, want null", where, *e.Errno)
					}
					if e.Class != wantClass {
						t.Errorf("%s: class %q, want %q", where, e.Class, wantClass)
					}
					if e.DurationNs == nil || *e.DurationNs == 0 || *e.DurationNs > uint64(10*time.Second) {
						t.Errorf("%s: duration_ns %v, want a positive number below 10 s", where, e.DurationNs)
					}
					if e.Violations == nil || len(e.Violations) != 0 {
						t.Errorf("%s: violations %v, want []", where, e.Violations)
					}
				}
				for i := 1; i < len(evs); i++ {
					if *evs[i].StartNs < *evs[i-1].StartNs {
						t.Errorf("event %d starts at %d, before event %d at %d", i, *evs[i].StartNs, i-1, *evs[i-1].StartNs)
					}
				}
				// -ttt gives time_unix_ns, start_ns on the wall clock: inside the run,
				// and as far from the first event as start_ns is (one offset for all).
				for i, e := range evs {
					if e.TimeUnixNs == nil {
						t.Fatalf("event %d has no time_unix_ns", i)
					}
					at := time.Unix(0, *e.TimeUnixNs)
					if at.Before(begin.Add(-time.Millisecond)) || at.After(end) {
						t.Errorf("event %d: time_unix_ns %v outside the run [%v, %v]", i, at, begin, end)
					}
					if got, want := *e.TimeUnixNs-*evs[0].TimeUnixNs, int64(*e.StartNs-*evs[0].StartNs); got != want {
						t.Errorf("event %d: %d ns after the first by time_unix_ns, %d by start_ns", i, got, want)
					}
				}
			},
		},
		// Durations: -T appends strace's " <S.UUUUUU>" to every line.
		"Durations": {
			generateEvent: func(t *testing.T, dir string) caseRun { return runOffsets(t, dir, "-T") },
			validateEvent: func(t *testing.T, r caseRun) {
				calls := offsetsManifest(t, r.stdout)
				out := lines(r.stderr)
				if r.code != 0 || len(out) != len(calls)+1 {
					t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				dur := regexp.MustCompile(` <(\d+)\.(\d{6})>$`)
				for i, c := range calls {
					m := dur.FindStringSubmatchIndex(out[i])
					if m == nil {
						t.Errorf("line %q has no duration", out[i])
						continue
					}
					if want := straceLine(t, c, testComm()); out[i][:m[0]] != want {
						t.Errorf("line %q, want %q followed by the duration", out[i], want)
					}
					if s := out[i][m[2]:m[3]]; s != "0" {
						t.Errorf("line %q: a call of the offsets workload took %s s", out[i], s)
					}
				}
				if out[len(calls)] != accountingLine(9, 9, 0) {
					t.Errorf("last line %q", out[len(calls)])
				}
			},
		},
		// Timestamps: -ttt puts each call's start time, as Unix time, after
		// the thread prefix, as strace does; the times fall inside the run and
		// follow the workload's order, and "= " is aligned counting them.
		"Timestamps": {
			generateEvent: func(t *testing.T, dir string) caseRun { return runOffsets(t, dir, "-ttt") },
			validateEvent: func(t *testing.T, r caseRun) {
				begin, end := r.begin, r.end
				if r.code != 0 {
					t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
				}
				calls := offsetsManifest(t, r.stdout)
				got := lines(r.stderr)
				if len(got) != len(calls)+1 {
					t.Fatalf("stderr:\n%s", r.stderr)
				}
				stamp := regexp.MustCompile(`^(\[pid +\d+<[^>]*>\] )(\d+)\.(\d{6}) (.*)$`)
				var prev time.Time
				for i, c := range calls {
					m := stamp.FindStringSubmatch(got[i])
					if m == nil {
						t.Fatalf("line %q has no -ttt time after its prefix", got[i])
					}
					sec, _ := strconv.ParseInt(m[2], 10, 64)
					usec, _ := strconv.ParseInt(m[3], 10, 64)
					at := time.Unix(sec, usec*1000)
					if at.Before(begin.Add(-time.Millisecond)) || at.After(end) || at.Before(prev) {
						t.Errorf("line %d at %v: outside the run [%v, %v] or before the line above", i+1, at, begin, end)
					}
					prev = at
					if want := straceLineAt(t, c, testComm(), m[2]+"."+m[3]+" "); got[i] != want {
						t.Errorf("line %d: %q, want %q", i+1, got[i], want)
					}
				}
			},
		},
		// OutputFile: -o FILE takes the events and the -c table; stderr
		// keeps only the accounting line.
		"OutputFile": {
			generateEvent: func(t *testing.T, dir string) caseRun {
				return runOffsets(t, dir, "-o", filepath.Join(dir, "events.txt"), "-c")
			},
			validateEvent: func(t *testing.T, r caseRun) {
				file := filepath.Join(r.dir, "events.txt")
				calls := offsetsManifest(t, r.stdout)
				if r.code != 0 {
					t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				if want := accountingLine(9, 9, 0) + "\n"; r.stderr != want {
					t.Errorf("stderr %q, want only %q", r.stderr, want)
				}
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				got := lines(string(data))
				if len(got) < len(calls) {
					t.Fatalf("%s:\n%s", file, data)
				}
				for i, c := range calls {
					if want := straceLine(t, c, testComm()); got[i] != want {
						t.Errorf("%s line %d: %q, want %q", file, i+1, got[i], want)
					}
				}
				if got[len(calls)] != "sendfile calls (exact, counted in the kernel):" {
					t.Errorf("%s: the table does not follow the events: %q", file, got[len(calls)])
				}
				checkTable(t, string(data), countManifest(t, calls), 9)
			},
		},
		// JSONOutputFileWithTable: with --format json the -o file stays
		// JSON Lines, and the -c table goes to stderr.
		"JSONOutputFileWithTable": {
			generateEvent: func(t *testing.T, dir string) caseRun {
				return runOffsets(t, dir, "--format", "json", "-o", filepath.Join(dir, "events.jsonl"), "-c")
			},
			validateEvent: func(t *testing.T, r caseRun) {
				file := filepath.Join(r.dir, "events.jsonl")
				if r.code != 0 {
					t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				evs := parseJSONEvents(t, string(data))
				if len(evs) != 9 {
					t.Errorf("%s: %d events, want 9", file, len(evs))
				}
				for i, e := range evs {
					if e.TimeUnixNs != nil {
						t.Errorf("event %d has time_unix_ns without -t, -tt or -ttt", i)
					}
				}
				checkTable(t, r.stderr, countManifest(t, offsetsManifest(t, r.stdout)), 9)
			},
		},
		// SummaryTable: -c prints the strace -c style table, exact counts.
		"SummaryTable": {
			generateEvent: func(t *testing.T, dir string) caseRun { return runOffsets(t, dir, "-c") },
			validateEvent: func(t *testing.T, r caseRun) {
				calls := offsetsManifest(t, r.stdout)
				if r.code != 0 {
					t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				checkTable(t, r.stderr, countManifest(t, calls), 9)
				if !strings.HasSuffix(r.stderr, "\n"+accountingLine(9, 9, 0)+"\n") {
					t.Errorf("stderr does not end with the accounting line:\n%s", r.stderr)
				}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tc.validateEvent(t, tc.generateEvent(t, t.TempDir()))
		})
	}
}
