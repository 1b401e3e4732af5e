// Package report writes what a finished run leaves for a CI runner: the
// --report JSON document and the --junit XML, each with the first events
// behind a failed expectation (Offenders, a session sink).
package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/session"
)

// Report is the --report document: one JSON object for a CI runner.
type Report struct {
	Version       string            `json:"version"`
	Command       []string          `json:"command"`
	Start         time.Time         `json:"start"`
	End           time.Time         `json:"end"`
	ExitCode      int               `json:"exit_code"`
	Summary       summary           `json:"summary"`
	ErrorsByErrno map[string]uint64 `json:"errors_by_errno"`
	Violations    map[string]uint64 `json:"violations_by_rule"`
	Skipped       map[string]uint64 `json:"skipped_by_program"`
	Expectations  []expectation     `json:"expectations"`
	// FirstViolations are the first events that broke a contract rule.
	FirstViolations []json.RawMessage `json:"first_violations"`
}

// summary is the report's "summary" object: which totals it shows,
// and in what order, is the report's format.
type summary struct {
	Calls      uint64 `json:"calls"`
	Bytes      uint64 `json:"bytes"`
	Errors     uint64 `json:"errors"`
	Short      uint64 `json:"short"`
	EOF        uint64 `json:"eof"`
	Empty      uint64 `json:"empty"`
	OffsetNull uint64 `json:"offset_null"`
	OffsetPtr  uint64 `json:"offset_ptr"`
	Violations uint64 `json:"violations"`
	Events     uint64 `json:"events"`
	Lost       uint64 `json:"lost"`
	SampledOut uint64 `json:"sampled_out"`
	Restarts   uint64 `json:"restarts"`
	// Skipped: program runs the kernel skipped; not zero, the counts
	// are lower bounds and kernel-counted expectations inconclusive.
	Skipped uint64 `json:"skipped"`
	// Escaped: tasks of the run that moved out of its group (followed).
	Escaped uint64 `json:"escaped"`
	// MissedExits: thread exits the kernel skipped telling sfwatch
	// (sched_process_exit's skips); they cost no call.
	MissedExits uint64 `json:"missed_exits"`
	P50Ns       int64  `json:"latency_p50_ns"`
	P99Ns       int64  `json:"latency_p99_ns"`
	MaxNs       int64  `json:"latency_max_ns"`
}

// expectation is one --expect and how it came out.
type expectation struct {
	Expr   string `json:"expr"`
	OK     *bool  `json:"ok"` // null: inconclusive
	Actual uint64 `json:"actual"`
	Why    string `json:"why,omitempty"` // why it is inconclusive
	// Offending are the first events behind a failed expectation.
	Offending []json.RawMessage `json:"offending,omitempty"`
	lines     string            // the same events as strace-style lines, for JUnit
}

// New is the report of the run of argv (sfwatch's own arguments for
// attach) by sfwatch version, with the outcomes of its expectations and
// the events offending kept for them.
func New(version string, argv []string, o session.Outcome, outcomes []events.Outcome, offending *Offenders) *Report {
	s := o.Summary
	r := &Report{
		Version:  version,
		Command:  argv,
		Start:    o.Start,
		End:      o.End,
		ExitCode: o.ExitCode,
		Summary: summary{
			Calls: s.Calls, Bytes: s.Bytes, Errors: s.Errors, Short: s.Short, EOF: s.EOF, Empty: s.Empty,
			OffsetNull: s.OffsetNull, OffsetPtr: s.OffsetPtr, Violations: s.Violations,
			Events: s.Events, Lost: s.Lost, SampledOut: s.SampledOut, Restarts: s.Restarts,
			Skipped: s.Skipped, Escaped: s.Escaped, MissedExits: s.MissedExits,
			P50Ns: int64(s.P50), P99Ns: int64(s.P99), MaxNs: int64(s.Max),
		},
		ErrorsByErrno:   s.ErrorsByErrno,
		Violations:      s.ViolationsByRule,
		Skipped:         s.SkippedByProgram,
		Expectations:    []expectation{},
		FirstViolations: eventsJSON(s.FirstViolations),
	}
	for i, x := range outcomes {
		re := expectation{Expr: x.Expr, OK: x.OK, Actual: x.Actual, Why: x.Why}
		if x.OK != nil && !*x.OK {
			re.Offending = eventsJSON(offending.kept[i])
			re.lines = offending.Text(i)
		}
		r.Expectations = append(r.Expectations, re)
	}
	return r
}

// eventsJSON renders events as the JSON objects of --format json.
func eventsJSON(evs []events.Checked) []json.RawMessage {
	out := []json.RawMessage{}
	o := events.JSONOptions{Time: true, WallOffsetNs: events.WallOffset()}
	for i := range evs {
		line := events.AppendJSON(nil, &evs[i].Event, evs[i].Verdict, o)
		out = append(out, json.RawMessage(bytes.TrimSpace(line)))
	}
	return out
}

// WriteJSON writes the report to path, whole (see writeWhole).
func (r *Report) WriteJSON(path string) error {
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	enc.SetEscapeHTML(false) // keep "calls>=1" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	if err := writeWhole(path, data.Bytes()); err != nil {
		return fmt.Errorf("writing report %s: %w", path, err)
	}
	return nil
}

// JUnit XML as Jenkins' schema (junit-10.xsd) has it: one suite, a case
// per expectation and one for the run itself (the command's exit status),
// so that a run without --expect is not an empty report, which Jenkins
// takes for a failure.
type junitSuite struct {
	XMLName   xml.Name    `xml:"testsuite"`
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Errors    int         `xml:"errors,attr"`
	Skipped   int         `xml:"skipped,attr"`
	Time      float64     `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr"` // ISO 8601, no zone: the schema's xs:dateTime pattern
	Hostname  string      `xml:"hostname,attr"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the expectations and the run's exit status to path as
// JUnit XML, whole.
func (r *Report) WriteJUnit(path string) error {
	hostname, _ := os.Hostname()
	suite := junitSuite{
		Name:      "sfwatch " + strings.Join(r.Command, " "),
		Tests:     len(r.Expectations) + 1,
		Time:      r.End.Sub(r.Start).Seconds(),
		Timestamp: r.Start.UTC().Format("2006-01-02T15:04:05"),
		Hostname:  hostname,
		Cases:     []junitCase{},
	}
	for _, x := range r.Expectations {
		c := junitCase{Name: x.Expr, Classname: "sfwatch.expect"}
		switch {
		case x.OK == nil:
			suite.Skipped++
			c.Skipped = &junitMessage{Message: fmt.Sprintf("inconclusive (%s): %d events lost, %d sampled out, %d program runs skipped",
				x.Why, r.Summary.Lost, r.Summary.SampledOut, r.Summary.Skipped)}
		case !*x.OK:
			suite.Failures++
			c.Failure = &junitMessage{Message: fmt.Sprintf("%s: actual %d", x.Expr, x.Actual), Text: x.lines}
		}
		suite.Cases = append(suite.Cases, c)
	}
	run := junitCase{Name: "exit status", Classname: "sfwatch.run", Time: suite.Time}
	if r.ExitCode != 0 {
		suite.Failures++
		run.Failure = &junitMessage{Message: fmt.Sprintf("%s exited with status %d", strings.Join(r.Command, " "), r.ExitCode)}
	}
	suite.Cases = append(suite.Cases, run)
	data, err := xml.MarshalIndent(suite, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding junit: %w", err)
	}
	if err := writeWhole(path, append([]byte(xml.Header), append(data, '\n')...)); err != nil {
		return fmt.Errorf("writing junit %s: %w", path, err)
	}
	return nil
}
