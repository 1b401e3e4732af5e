package main

// --expect, --report and --junit: expectations that hold, fail or are
// inconclusive (events lost) against the offsets workload's exact counts,
// the exit code they give, malformed expressions, and every field of the
// report and the JUnit file.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// expectKeys are every --expect key, as documented.
var expectKeys = []string{"calls", "bytes", "errors", "short", "eof", "empty", "offset_null", "offset_ptr", "violations", "lost"}

// offsetsCounts runs nothing: it is what the offsets workload's manifest
// says, checked against the numbers the tests below were written for.
func offsetsCounts(t *testing.T, stdout string) manifestCounts {
	t.Helper()
	m := countManifest(t, offsetsManifest(t, stdout))
	want := manifestCounts{calls: 9, bytes: 8292, errors: 3, short: 1, eof: 2, empty: 1, offsetNull: 4, offsetPtr: 5}
	if m.numbers() != want.numbers() {
		t.Fatalf("offsets workload: %+v, want %+v", m, want)
	}
	return m
}

// junitDoc is a JUnit XML file as CI systems read it.
type junitDoc struct {
	XMLName   xml.Name  `xml:"testsuite"`
	Name      string    `xml:"name,attr"`
	Tests     int       `xml:"tests,attr"`
	Failures  int       `xml:"failures,attr"`
	Errors    *int      `xml:"errors,attr"`
	Skipped   int       `xml:"skipped,attr"`
	Time      float64   `xml:"time,attr"`
	Timestamp string    `xml:"timestamp,attr"`
	Hostname  string    `xml:"hostname,attr"`
	Cases     []junitTC `xml:"testcase"`
}

type junitTC struct {
	Name      string  `xml:"name,attr"`
	Classname string  `xml:"classname,attr"`
	Time      *string `xml:"time,attr"`
	Failure   *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
}

// readJUnit parses a JUnit file, checks what every one has (the schema's
// attributes, and a last case for the run: failed when the command's
// status is not 0), and returns it without that case, counts included.
func readJUnit(t *testing.T, path string, status int) junitDoc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), xml.Header) {
		t.Errorf("junit file does not start with the XML header:\n%s", data)
	}
	var j junitDoc
	if err := xml.Unmarshal(data, &j); err != nil {
		t.Fatalf("parsing junit: %v\n%s", err, data)
	}
	if _, err := time.Parse("2006-01-02T15:04:05", j.Timestamp); err != nil || j.Errors == nil || *j.Errors != 0 || j.Hostname == "" {
		t.Errorf("junit: timestamp %q (%v), errors %v, hostname %q", j.Timestamp, err, j.Errors, j.Hostname)
	}
	if len(j.Cases) == 0 {
		t.Fatalf("junit: no test case for the run\n%s", data)
	}
	run := j.Cases[len(j.Cases)-1]
	if run.Name != "exit status" || run.Classname != "sfwatch.run" || run.Time == nil || (run.Failure != nil) != (status != 0) ||
		run.Failure != nil && !strings.HasSuffix(run.Failure.Message, fmt.Sprintf(" exited with status %d", status)) {
		t.Errorf("junit: run case %+v, want one for exit status %d", run, status)
	}
	for _, c := range j.Cases {
		if c.Time == nil {
			t.Errorf("junit: case %q has no time", c.Name)
		}
	}
	j.Cases = j.Cases[:len(j.Cases)-1]
	j.Tests--
	if run.Failure != nil {
		j.Failures--
	}
	return j
}

// expectLine is what sfwatch prints on stderr for an evaluated expectation.
func expectLine(expr, verdict, key string, actual uint64) string {
	return fmt.Sprintf("sfwatch: expect %s: %s (%s = %d)", expr, verdict, key, actual)
}

// TestExpectAllHold: every key with every operator, each written to hold
// against the offsets workload's exact counts: exit 0, all ok in the
// report and in JUnit.
func TestExpectAllHold(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	// The counts are checked against the manifest after the run; the
	// expressions are written from the known values.
	known := manifestCounts{calls: 9, bytes: 8292, errors: 3, short: 1, eof: 2, empty: 1, offsetNull: 4, offsetPtr: 5}
	var flags, exprs, keys []string
	for _, key := range expectKeys {
		v := known.value(t, key)
		holds := []string{
			fmt.Sprintf("%s==%d", key, v),
			fmt.Sprintf("%s != %d", key, v+1),
			fmt.Sprintf("%s>=%d", key, v),
			fmt.Sprintf("%s<= %d", key, v),
			fmt.Sprintf("%s <%d", key, v+1),
		}
		if v > 0 {
			holds = append(holds, fmt.Sprintf("%s>%d", key, v-1))
		}
		for _, x := range holds {
			flags = append(flags, "--expect", x)
			exprs = append(exprs, x)
			keys = append(keys, key)
		}
	}
	dir := t.TempDir()
	report, junit := filepath.Join(dir, "report.json"), filepath.Join(dir, "junit.xml")
	flags = append(flags, "--quiet", "--report", report, "--junit", junit)
	r := runWorkload(t, flags, "offsets")
	m := offsetsCounts(t, r.stdout)
	if r.code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	out := lines(r.stderr)
	if len(out) != len(exprs)+1 || out[len(exprs)] != accountingLine(9, 9, 0) {
		t.Fatalf("stderr: want %d expectation lines and the accounting line:\n%s", len(exprs), r.stderr)
	}
	rep := readReport(t, report)
	if len(rep.Expectations) != len(exprs) {
		t.Fatalf("report has %d expectations, want %d", len(rep.Expectations), len(exprs))
	}
	for i, x := range exprs {
		key := keys[i]
		v := m.value(t, key)
		if want := expectLine(strings.TrimSpace(x), "ok", key, v); out[i] != want {
			t.Errorf("stderr line %q, want %q", out[i], want)
		}
		e := rep.Expectations[i]
		if e.Expr != x || e.OK == nil || !*e.OK || e.Actual == nil || *e.Actual != v || e.Offending != nil {
			t.Errorf("report expectation %d: %+v, want %q ok, actual %d, no offending events", i, e, x, v)
		}
	}
	j := readJUnit(t, junit, 0)
	if j.Tests != len(exprs) || j.Failures != 0 || j.Skipped != 0 || len(j.Cases) != len(exprs) {
		t.Errorf("junit: tests %d failures %d skipped %d cases %d, want %d 0 0 %d", j.Tests, j.Failures, j.Skipped, len(j.Cases), len(exprs), len(exprs))
	}
	for i, c := range j.Cases {
		if c.Name != exprs[i] || c.Classname != "sfwatch.expect" || c.Failure != nil || c.Skipped != nil {
			t.Errorf("junit case %d: %+v, want %q passed", i, c, exprs[i])
		}
	}
}

// TestExpectFails: one failing expectation per operator among holding
// ones: exit 3, each failure named with its actual value on stderr, in
// the report and in JUnit, with the events behind it.
func TestExpectFails(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	type tc struct {
		expr, key string
		actual    uint64
		ok        bool
	}
	cases := []tc{
		{"calls==9", "calls", 9, true},
		{"calls==10", "calls", 9, false},
		{"errors!=3", "errors", 3, false},
		{"bytes>=8293", "bytes", 8292, false},
		{"eof<=1", "eof", 2, false},
		{"offset_ptr>5", "offset_ptr", 5, false},
		{"short<1", "short", 1, false},
		{"errors==0", "errors", 3, false},
		{"lost==0", "lost", 0, true},
		{"violations==0", "violations", 0, true},
	}
	dir := t.TempDir()
	report, junit := filepath.Join(dir, "report.json"), filepath.Join(dir, "junit.xml")
	flags := []string{"-o", filepath.Join(dir, "events.txt"), "--report", report, "--junit", junit}
	for _, c := range cases {
		flags = append(flags, "--expect", c.expr)
	}
	before := time.Now()
	r := runWorkload(t, flags, "offsets")
	after := time.Now()
	calls := offsetsManifest(t, r.stdout)
	if r.code != exitExpectFailed {
		t.Errorf("exit %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
	// stderr: each expectation, a failed one followed by its first events
	// (at most 3), then the accounting line.
	comm := testComm()
	offending := map[string][]directCall{
		"calls==10":    calls[:3],
		"errors!=3":    {calls[4], calls[5], calls[6]},
		"bytes>=8293":  calls[:3],
		"eof<=1":       {calls[3], calls[8]},
		"offset_ptr>5": {calls[1], calls[2], calls[3]},
		"short<1":      {calls[2]},
		"errors==0":    {calls[4], calls[5], calls[6]},
	}
	var want []string
	for _, c := range cases {
		verdict := "ok"
		if !c.ok {
			verdict = "FAILED"
		}
		want = append(want, expectLine(c.expr, verdict, c.key, c.actual))
		for _, call := range offending[c.expr] {
			want = append(want, "sfwatch:   "+straceLine(t, call, comm))
		}
	}
	want = append(want, accountingLine(9, 9, 0))
	if got := lines(r.stderr); !slices.Equal(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	rep := readReport(t, report)
	if *rep.ExitCode != 0 {
		t.Errorf("report exit_code %d, want the command's 0", *rep.ExitCode)
	}
	if len(rep.Expectations) != len(cases) {
		t.Fatalf("report: %d expectations, want %d", len(rep.Expectations), len(cases))
	}
	for i, c := range cases {
		e := rep.Expectations[i]
		if e.Expr != c.expr || e.OK == nil || *e.OK != c.ok || *e.Actual != c.actual {
			t.Errorf("report expectation %d: expr %q ok %v actual %v, want %+v", i, e.Expr, e.OK, e.Actual, c)
			continue
		}
		if c.ok {
			if e.Offending != nil {
				t.Errorf("report: %s holds but lists offending events", c.expr)
			}
			continue
		}
		evs := parseJSONEvents(t, string(joinRaw(e.Offending)))
		wantEvs := offending[c.expr]
		if len(evs) != len(wantEvs) {
			t.Errorf("report: %s: %d offending events, want %d", c.expr, len(evs), len(wantEvs))
			continue
		}
		for k, ev := range evs {
			if w := wantEvs[k]; ev.TID != w.Tid || ev.OutFD != w.OutFD || ev.InFD != w.InFD || ev.Ret != w.Ret || ev.Count != w.Count {
				t.Errorf("report: %s: offending event %d %+v, want %+v", c.expr, k, ev, w)
			}
			if ev.TimeUnixNs == nil || time.Unix(0, *ev.TimeUnixNs).Before(before) || time.Unix(0, *ev.TimeUnixNs).After(after) {
				t.Errorf("report: %s: offending event %d: time_unix_ns %v, want a time within the run", c.expr, k, ev.TimeUnixNs)
			}
		}
	}

	j := readJUnit(t, junit, 0)
	failures := 0
	for _, c := range cases {
		if !c.ok {
			failures++
		}
	}
	if j.Tests != len(cases) || j.Failures != failures || j.Skipped != 0 || len(j.Cases) != len(cases) {
		t.Fatalf("junit: tests %d failures %d skipped %d cases %d, want %d %d 0", j.Tests, j.Failures, j.Skipped, len(j.Cases), len(cases), failures)
	}
	if !strings.Contains(j.Name, os.Args[0]+" offsets") {
		t.Errorf("junit suite name %q does not name the command", j.Name)
	}
	if j.Time <= 0 || j.Time > 60 {
		t.Errorf("junit time %v", j.Time)
	}
	for i, c := range cases {
		jc := j.Cases[i]
		switch {
		case jc.Name != c.expr || jc.Skipped != nil:
			t.Errorf("junit case %d: %+v, want %q", i, jc, c.expr)
		case c.ok && jc.Failure != nil:
			t.Errorf("junit case %s: failed: %+v", c.expr, jc.Failure)
		case !c.ok && jc.Failure == nil:
			t.Errorf("junit case %s: not failed", c.expr)
		case !c.ok:
			if want := fmt.Sprintf("%s: actual %d", c.expr, c.actual); jc.Failure.Message != want {
				t.Errorf("junit case %s: message %q, want %q", c.expr, jc.Failure.Message, want)
			}
			var text string
			for _, call := range offending[c.expr] {
				text += straceLine(t, call, comm) + "\n"
			}
			if jc.Failure.Text != text {
				t.Errorf("junit case %s: text %q, want %q", c.expr, jc.Failure.Text, text)
			}
		}
	}
}

// joinRaw makes JSON Lines of the (indented) objects of a report.
func joinRaw(raws []json.RawMessage) []byte {
	var b bytes.Buffer
	for _, r := range raws {
		json.Compact(&b, r)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestExpectExitCodeOutranksChild: a failed expectation exits 3 even when
// the command exits non-zero; with every expectation holding, the
// command's status is sfwatch's.
func TestExpectExitCodeOutranksChild(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	report := filepath.Join(t.TempDir(), "report.json")
	r := runWorkload(t, []string{"--expect", "calls>=1", "--report", report}, "exit", "7")
	if r.code != exitExpectFailed {
		t.Errorf("exit %d, want 3", r.code)
	}
	if want := expectLine("calls>=1", "FAILED", "calls", 0) + "\n" + accountingLine(0, 0, 0) + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	if rep := readReport(t, report); *rep.ExitCode != 7 || *rep.Summary.Calls != 0 {
		t.Errorf("report exit_code %d calls %d, want the command's 7 and 0", *rep.ExitCode, *rep.Summary.Calls)
	}
	r = runWorkload(t, []string{"--expect", "calls==0"}, "exit", "7")
	if r.code != 7 {
		t.Errorf("exit %d, want the command's 7", r.code)
	}
}

// TestExpectForcedLoss: a 4 KiB ring buffer against four threads loses
// events; the kernel's counts stay exact, the per-event key is
// inconclusive (exit 4, ok null, a skipped JUnit case), and a failure
// still outranks it.
func TestExpectForcedLoss(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	const threads, n = 4, 20000
	want := loopTotals(threads, n, false)
	dir := t.TempDir()
	report, junit := filepath.Join(dir, "report.json"), filepath.Join(dir, "junit.xml")
	exact := []string{
		fmt.Sprintf("calls==%d", want.calls),
		fmt.Sprintf("bytes==%d", want.bytes),
		fmt.Sprintf("eof==%d", want.eof),
		fmt.Sprintf("offset_null==%d", want.offsetNull),
		"offset_ptr==0", "errors==0", "short==0", "lost>0",
	}
	flags := []string{"--ringbuf-size", "4096", "-o", os.DevNull, "--report", report, "--junit", junit, "--expect", "violations==0"}
	for _, x := range exact {
		flags = append(flags, "--expect", x)
	}
	r := runWorkload(t, flags, "threads", strconv.Itoa(threads), strconv.Itoa(n))
	if r.code != exitInconclusive {
		t.Errorf("exit %d, want 4; stderr:\n%s", r.code, r.stderr)
	}
	rep := readReport(t, report)
	s := rep.Summary
	if *s.Lost == 0 {
		t.Fatalf("no event lost with a 4 KiB ring buffer: %+v", s)
	}
	if *s.Calls != want.calls || *s.Events+*s.Lost != *s.Calls || *s.Bytes != want.bytes || *s.EOF != want.eof ||
		*s.OffsetNull != want.offsetNull || *s.SampledOut != 0 {
		t.Errorf("summary: calls %d events %d lost %d bytes %d eof %d null %d; want calls %d = events + lost, bytes %d eof %d null %d",
			*s.Calls, *s.Events, *s.Lost, *s.Bytes, *s.EOF, *s.OffsetNull, want.calls, want.bytes, want.eof, want.offsetNull)
	}
	out := lines(r.stderr)
	if wantLine := accountingLine(want.calls, *s.Events, *s.Lost); len(out) == 0 || out[len(out)-1] != wantLine {
		t.Errorf("stderr:\n%s\nwant the last line %q", r.stderr, wantLine)
	}
	// (A slow run may also print a periodic loss notice.)
	if w := expectLine("violations==0", "INCONCLUSIVE (events were lost or sampled out)", "violations", 0); !slices.Contains(out, w) {
		t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
	}
	if e := rep.Expectations[0]; e.Expr != "violations==0" || e.OK != nil || *e.Actual != 0 {
		t.Errorf("report: %+v, want violations==0 with ok null", e)
	}
	for i, x := range exact {
		if e := rep.Expectations[i+1]; e.Expr != x || e.OK == nil || !*e.OK {
			t.Errorf("report: %q: ok %v actual %v, want ok", x, e.OK, e.Actual)
		}
	}
	j := readJUnit(t, junit, 0)
	if j.Tests != 1+len(exact) || j.Failures != 0 || j.Skipped != 1 || j.Cases[0].Skipped == nil {
		t.Errorf("junit: tests %d failures %d skipped %d, want %d 0 1", j.Tests, j.Failures, j.Skipped, 1+len(exact))
	} else if msg := j.Cases[0].Skipped.Message; msg != fmt.Sprintf("inconclusive (events were lost or sampled out): %d events lost, 0 sampled out, 0 program runs skipped", *s.Lost) {
		t.Errorf("junit skipped message %q", msg)
	}

	// An inconclusive and a failed expectation: the failure decides.
	r = runWorkload(t, []string{"--ringbuf-size", "4096", "--quiet", "--expect", "violations==0", "--expect", "calls<1"},
		"threads", strconv.Itoa(threads), strconv.Itoa(n))
	if r.code != exitExpectFailed {
		t.Errorf("inconclusive and failed: exit %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
}

// TestExpectMalformed: a malformed expression is a usage error before
// anything starts.
func TestExpectMalformed(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	for _, x := range []string{"", "calls", "calls=1", "calls==", "calls==x", "calls==1.5", "calls==0x10", "calls==-1", "calls==1 2",
		"Calls==1", "bytes=>1", "frobs==1", "==1", "calls===1", "calls==99999999999999999999"} {
		r := runWorkload(t, []string{"--expect", "calls>=0", "--expect", x, "--report", filepath.Join(t.TempDir(), "r.json")}, "offsets")
		if r.code != exitUsage || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.HasPrefix(r.stderr, "sfwatch: run: ") || !strings.Contains(r.stderr, fmt.Sprintf("bad expectation %q", x)) {
			t.Errorf("--expect %q: exit %d, stdout %q, stderr %q; want 2 and one line naming it", x, r.code, r.stdout, r.stderr)
		}
	}
}

// TestReport: --report and --junit for a plain run: every field.
func TestReport(t *testing.T) {
	testenv.RequirePrivileged(t)
	t.Parallel()
	dir := t.TempDir()
	report, junit := filepath.Join(dir, "report.json"), filepath.Join(dir, "junit.xml")
	before := time.Now()
	r := runWorkload(t, []string{"--quiet", "--report", report, "--junit", junit, "--expect", "errors==3"}, "offsets", "extra-arg")
	after := time.Now()
	m := offsetsCounts(t, r.stdout)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	rep := readReport(t, report)
	if !strings.HasPrefix(rep.Version, "sfwatch ") {
		t.Errorf("version %q", rep.Version)
	}
	if want := []string{os.Args[0], "offsets", "extra-arg"}; !slices.Equal(rep.Command, want) {
		t.Errorf("command %q, want %q", rep.Command, want)
	}
	if rep.Start.Before(before) || rep.End.After(after) || !rep.Start.Before(rep.End) {
		t.Errorf("start %v end %v, not within the run [%v, %v]", rep.Start, rep.End, before, after)
	}
	if *rep.ExitCode != 0 {
		t.Errorf("exit_code %d", *rep.ExitCode)
	}
	s := rep.Summary
	got := manifestCounts{calls: *s.Calls, bytes: *s.Bytes, errors: *s.Errors, short: *s.Short, eof: *s.EOF, empty: *s.Empty, offsetNull: *s.OffsetNull, offsetPtr: *s.OffsetPtr}
	if got.numbers() != m.numbers() {
		t.Errorf("summary %+v, want %+v", got, m)
	}
	if *s.Events != 9 || *s.Lost != 0 || *s.SampledOut != 0 || *s.Violations != 0 {
		t.Errorf("summary events %d lost %d sampled_out %d violations %d", *s.Events, *s.Lost, *s.SampledOut, *s.Violations)
	}
	if *s.MaxNs <= 0 || *s.P50Ns <= 0 || *s.P50Ns > *s.P99Ns || *s.P99Ns > *s.MaxNs {
		t.Errorf("latency p50 %d p99 %d max %d", *s.P50Ns, *s.P99Ns, *s.MaxNs)
	}
	if want := map[string]uint64{"EBADF": 1, "ESPIPE": 1, "EINVAL": 1}; !maps.Equal(rep.ErrorsByErrno, want) {
		t.Errorf("errors_by_errno %v, want %v", rep.ErrorsByErrno, want)
	}
	if rep.ViolationsByRule == nil || len(rep.ViolationsByRule) != 0 || rep.FirstViolations == nil || len(rep.FirstViolations) != 0 {
		t.Errorf("violations_by_rule %v first_violations %v, want {} and []", rep.ViolationsByRule, rep.FirstViolations)
	}
	if len(rep.Expectations) != 1 || rep.Expectations[0].Expr != "errors==3" || !*rep.Expectations[0].OK || *rep.Expectations[0].Actual != 3 {
		t.Errorf("expectations %+v", rep.Expectations)
	}
	j := readJUnit(t, junit, 0)
	if j.Tests != 1 || j.Failures != 0 || len(j.Cases) != 1 || j.Cases[0].Name != "errors==3" || j.Cases[0].Failure != nil {
		t.Errorf("junit %+v", j)
	}
	// No --expect: the report has an empty list, JUnit the run's case only.
	r = runWorkload(t, []string{"--quiet", "--report", report, "--junit", junit}, "exit", "3")
	if r.code != 3 {
		t.Errorf("exit %d, want 3", r.code)
	}
	if rep := readReport(t, report); rep.Expectations == nil || len(rep.Expectations) != 0 || *rep.ExitCode != 3 || *rep.Summary.Calls != 0 {
		t.Errorf("report without --expect: expectations %v exit_code %d calls %d", rep.Expectations, *rep.ExitCode, *rep.Summary.Calls)
	}
	if j := readJUnit(t, junit, 3); j.Tests != 0 || len(j.Cases) != 0 {
		t.Errorf("junit without --expect: %+v", j)
	}
}

// TestReportsCommandNotStarted: a command that is not found (127) or not
// executable (126) still gets its --report and --junit, with that exit
// code, no call, and its expectations evaluated against nothing.
func TestReportsCommandNotStarted(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  string
		code int
	}{
		{"not found", filepath.Join(dir, "missing"), 127},
		{"not executable", notExec, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report, junit := filepath.Join(dir, "r.json"), filepath.Join(dir, "j.xml")
			r := sfwatch(t, nil, "run", "--expect", "calls>=1", "--report", report, "--junit", junit, "--", tc.cmd)
			if r.code != tc.code || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want %d and one line", r.code, r.stderr, tc.code)
			}
			rep := readReport(t, report)
			if *rep.ExitCode != tc.code || *rep.Summary.Calls != 0 || len(rep.Expectations) != 1 || rep.Expectations[0].OK == nil || *rep.Expectations[0].OK {
				t.Errorf("report: exit_code %d calls %d expectations %+v; want %d, 0, calls>=1 failed", *rep.ExitCode, *rep.Summary.Calls, rep.Expectations, tc.code)
			}
			if j := readJUnit(t, junit, tc.code); j.Tests != 1 || j.Failures != 1 {
				t.Errorf("junit: %+v, want the expectation failed", j)
			}
		})
	}
}
