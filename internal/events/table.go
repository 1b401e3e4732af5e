package events

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// tableRow is one line of WriteTable: a section title, or a count (possibly
// none) and what it counts.
type tableRow struct {
	title string // a section title when non-empty
	count string
	label string
}

func countRow(n uint64, label string) tableRow {
	return tableRow{count: strconv.FormatUint(n, 10), label: label}
}

// WriteTable writes the summary as an aligned table, in the spirit of
// strace -c: the kernel's exact counts, then what the delivered events
// showed (violations, latency), then the failed calls by errno.
func WriteTable(w io.Writer, s Summary) error {
	rows := []tableRow{
		{title: "sendfile calls (exact, counted in the kernel):"},
		countRow(s.Calls, "calls"),
		countRow(s.Bytes, "bytes"),
		countRow(s.Errors, "errors"),
		countRow(s.Short, "short"),
		countRow(s.EOF, "eof"),
		countRow(s.Empty, "empty (count 0)"),
		countRow(s.OffsetNull, "offset NULL"),
		countRow(s.OffsetPtr, "offset pointer"),
	}
	if s.Unpaired != 0 {
		rows = append(rows, countRow(s.Unpaired, "unpaired (in flight when tracing began, not counted)"))
	}
	if s.Restarts != 0 {
		rows = append(rows, countRow(s.Restarts, "interrupted by a signal, restarted (not counted)"))
	}
	if s.Escaped != 0 {
		rows = append(rows, countRow(s.Escaped, "tasks that left the group (followed; their calls counted)"))
	}
	if s.Skipped != 0 {
		rows = append(rows, countRow(s.Skipped, "program runs the kernel skipped (counts above are lower bounds)"))
		for _, kv := range sortedCounts(s.SkippedByProgram) {
			if kv.n != 0 {
				rows = append(rows, countRow(kv.n, "  "+kv.name))
			}
		}
	}
	if s.MissedExits != 0 {
		rows = append(rows, countRow(s.MissedExits, "thread exits the kernel skipped telling sfwatch (no call missed)"))
	}

	rows = append(rows,
		tableRow{title: "events (one per call, checked against the contract):"},
		countRow(s.Events, "delivered"),
		countRow(s.Lost, "lost (ring buffer full)"),
	)
	if s.SampledOut != 0 {
		rows = append(rows, countRow(s.SampledOut, "sampled out"))
	}
	violations := "violations"
	if !s.Complete() {
		violations += " (among delivered events only)"
	}
	rows = append(rows, countRow(s.Violations, violations))
	for _, kv := range sortedCounts(s.ViolationsByRule) {
		rows = append(rows, countRow(kv.n, "  "+kv.name))
	}
	if s.OffsetUnknown != 0 {
		rows = append(rows, countRow(s.OffsetUnknown, "offset unreadable (offset rules not checked)"))
	}
	rows = append(rows, tableRow{label: fmt.Sprintf("latency p50 %v, p99 %v, max %v", s.P50, s.P99, s.Max)})

	if len(s.ErrorsByErrno) > 0 {
		rows = append(rows, tableRow{title: "errors by errno:"})
		for _, kv := range sortedCounts(s.ErrorsByErrno) {
			label := kv.name
			if msg := errnoMessage(kv.name); msg != "" {
				label += " (" + msg + ")"
			}
			rows = append(rows, countRow(kv.n, label))
		}
	}

	width := 0
	for _, r := range rows {
		width = max(width, len(r.count))
	}
	bw := bufio.NewWriter(w)
	for _, r := range rows {
		if r.title != "" {
			fmt.Fprintln(bw, r.title)
		} else {
			fmt.Fprintf(bw, "  %*s  %s\n", width, r.count, r.label)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing summary table: %w", err)
	}
	return nil
}

type namedCount struct {
	name string
	n    uint64
}

// sortedCounts orders a count map for display: largest first, then by name.
func sortedCounts(m map[string]uint64) []namedCount {
	out := make([]namedCount, 0, len(m))
	for name, n := range m {
		out = append(out, namedCount{name, n})
	}
	slices.SortFunc(out, func(a, b namedCount) int {
		return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.name, b.name))
	})
	return out
}

// errnoMessage finds strace's text for an errno name; "" if there is none.
func errnoMessage(name string) string {
	for _, t := range errnoTable {
		if t.name == name {
			return t.message
		}
	}
	return ""
}

// AccountingLine is the line printed at the end of every run, so that a
// loss is never silent:
//
//	sfwatch: 1000000 calls counted in the kernel, 1000000 events delivered, 0 lost
//
// followed by the sampled-out, unpaired, escaped and skipped counts when there are any, and by
// a discrepancy, should the events not add up to the calls.
func AccountingLine(s Summary) string {
	b := fmt.Appendf(nil, "sfwatch: %d calls counted in the kernel, %d events delivered, %d lost", s.Calls, s.Events, s.Lost)
	if s.SampledOut != 0 {
		b = fmt.Appendf(b, ", %d sampled out", s.SampledOut)
	}
	if s.Unpaired != 0 {
		b = fmt.Appendf(b, ", %d unpaired (in flight when tracing began)", s.Unpaired)
	}
	if s.Escaped != 0 {
		b = fmt.Appendf(b, ", %d left the group (followed)", s.Escaped)
	}
	if s.Skipped != 0 {
		// Which programs: a skipped exit or entry loses a call, a skipped
		// signal_deliver may misplace one.
		b = fmt.Appendf(b, ", %d program runs skipped by the kernel (", s.Skipped)
		for _, kv := range sortedCounts(s.SkippedByProgram) {
			if kv.n != 0 {
				b = fmt.Appendf(b, "%s %d; ", kv.name, kv.n)
			}
		}
		b = append(b, "calls may be missing; see 'sfwatch doctor')"...)
	}
	if d := int64(s.Calls) - int64(s.Events+s.Lost+s.SampledOut); d != 0 {
		b = fmt.Appendf(b, ", %d unaccounted for", d)
	}
	return string(b)
}
