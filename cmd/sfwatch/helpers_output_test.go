package main

// Helpers that read what sfwatch prints: the offsets workload's account of
// its calls, the seed's regexp, and the -c table.

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"time"
)

// The seed's test matched this against `strace -f` output.
var seedRegexp = regexp.MustCompile(`sendfile(64)?\(\d+,\s*\d+,\s*NULL,\s*\d+\)\s*=\s*\d+\s*\n`)

// offsetsManifest checks the offsets workload's own account of its calls:
// the kinds the tests below rely on, in order.
func offsetsManifest(t *testing.T, stdout string) []directCall {
	t.Helper()
	calls := parseManifest(t, stdout)
	if len(calls) != 9 {
		t.Fatalf("offsets workload reported %d calls, want 9:\n%s", len(calls), stdout)
	}
	want := []struct {
		null bool
		ret  int64
	}{{true, 4096}, {false, 4096}, {false, 100}, {false, 0}, {true, -9}, {false, -29}, {true, -22}, {false, 0}, {true, 0}}
	for i, w := range want {
		if c := calls[i]; c.Null != w.null || c.Ret != w.ret {
			t.Fatalf("offsets workload call %d: %+v, want null=%v ret=%d", i, c, w.null, w.ret)
		}
	}
	if c := calls[1]; c.OffsetBefore != 0 || c.OffsetAfter != 4096 {
		t.Fatalf("offsets workload call 1: %+v, want [0] => [4096]", c)
	}
	return calls
}

// tableCounts reads the "  N  label" rows of a -c table.
func tableCounts(text string) map[string]uint64 {
	rows := map[string]uint64{}
	re := regexp.MustCompile(`(?m)^ +(\d+)  (\S.*)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		rows[m[2]] = n
	}
	return rows
}

func checkTable(t *testing.T, text string, m manifestCounts, events uint64) {
	t.Helper()
	rows := tableCounts(text)
	want := map[string]uint64{
		"calls": m.calls, "bytes": m.bytes, "errors": m.errors, "short": m.short, "eof": m.eof,
		"empty (count 0)": m.empty, "offset NULL": m.offsetNull, "offset pointer": m.offsetPtr,
		"delivered": events, "lost (ring buffer full)": 0, "violations": 0,
	}
	for name, text := range map[string]string{"EBADF": "Bad file descriptor", "ESPIPE": "Illegal seek", "EINVAL": "Invalid argument"} {
		want[name+" ("+text+")"] = m.byErrno[name]
	}
	for label, n := range want {
		if got, ok := rows[label]; !ok || got != n {
			t.Errorf("table row %q: %d (present %v), want %d; table:\n%s", label, got, ok, n, text)
		}
	}
	for _, title := range []string{"sendfile calls (exact, counted in the kernel):\n", "events (one per call, checked against the contract):\n", "errors by errno:\n"} {
		if !strings.Contains(text, title) {
			t.Errorf("table lacks %q", title)
		}
	}
}

// testDef is a case of a table-driven test, in Inspektor Gadget's shape:
// generateEvent runs a workload under sfwatch (dir is the case's own
// directory, for the files sfwatch writes), and validateEvent checks what
// sfwatch printed and wrote.
type testDef struct {
	generateEvent func(t *testing.T, dir string) caseRun
	validateEvent func(t *testing.T, r caseRun)
}

// caseRun is one finished sfwatch run of a testDef: its result, the case's
// directory, and the times just before and after it.
type caseRun struct {
	result
	dir        string
	begin, end time.Time
}

// runOffsets runs the offsets workload under sfwatch run with flags.
func runOffsets(t *testing.T, dir string, flags ...string) caseRun {
	t.Helper()
	begin := time.Now()
	r := runWorkload(t, flags, "offsets")
	return caseRun{result: r, dir: dir, begin: begin, end: time.Now()}
}
