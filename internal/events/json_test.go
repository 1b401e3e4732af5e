package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sfwatch/sfwatch/internal/loader"
)

// decodeJSONLine parses one AppendJSON line, keeping numbers exact.
func decodeJSONLine(t *testing.T, line []byte) map[string]any {
	t.Helper()
	if len(line) == 0 || line[len(line)-1] != '\n' || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("%q is not one line ending in a newline", line)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("invalid JSON %q: %v", line, err)
	}
	return m
}

func TestAppendJSON(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	base := map[string]any{
		"pid": n("1200"), "tid": n("1234"), "comm": "server", "out_fd": n("4"), "in_fd": n("3"),
		"count": n("4096"), "duration_ns": n("123456"), "start_ns": n("1000000000"),
		"time_unix_ns": n("1795893921000000000"), // start_ns + the wall offset below
	}
	for _, tc := range []struct {
		name string
		e    Event
		want map[string]any // over base
	}{
		{"NULL offset", call(4, 3, 4096, 4096), map[string]any{
			"offset": nil, "ret": n("4096"), "errno": nil, "class": "ok", "violations": []any{}}},
		{"pointer offset", withOffset(call(4, 3, 4096, 100), 1<<40, 1<<40+100), map[string]any{
			"offset": map[string]any{"before": n("1099511627776"), "after": n("1099511627876")},
			"ret":    n("100"), "errno": nil, "class": "short", "violations": []any{}}},
		{"negative offset", withOffset(call(4, 3, 4096, -22), -5, -5), map[string]any{
			"offset": map[string]any{"before": n("-5"), "after": n("-5")},
			"ret":    n("-22"), "errno": "EINVAL", "class": "error", "violations": []any{}}},
		{"unreadable before", withUnreadableOffset(call(4, 3, 4096, -14), loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK), map[string]any{
			"offset": map[string]any{"before": nil, "after": n("0")},
			"ret":    n("-14"), "errno": "EFAULT", "class": "error", "violations": []any{}}},
		{"eof", call(4, 3, 4096, 0), map[string]any{
			"offset": nil, "ret": n("0"), "errno": nil, "class": "eof", "violations": []any{}}},
		{"restart", call(4, 3, 4096, -512), map[string]any{
			"offset": nil, "ret": n("-512"), "errno": "ERESTARTSYS", "class": "error", "violations": []any{}}},
		{"unnamed errno", call(4, 3, 4096, -1234), map[string]any{
			"offset": nil, "ret": n("-1234"), "errno": "errno 1234", "class": "error", "violations": []any{"unexpected_errno"}}},
		{"not an errno", call(4, 3, 4096, -5000), map[string]any{
			"offset": nil, "ret": n("-5000"), "errno": nil, "class": "error", "violations": []any{"ret_out_of_range"}}},
		{"two violations", withOffset(call(4, 3, 4096, 5000), 0, 0), map[string]any{
			"offset": map[string]any{"before": n("0"), "after": n("0")},
			"ret":    n("5000"), "errno": nil, "class": "ok", "violations": []any{"ret_over_count", "offset_not_advanced"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := AppendJSON([]byte("keep"), &tc.e, Validate(&tc.e), JSONOptions{Time: true, WallOffsetNs: 1795893920_000000000})
			if !bytes.HasPrefix(line, []byte("keep{")) {
				t.Fatalf("AppendJSON did not append: %q", line)
			}
			got := decodeJSONLine(t, line[len("keep"):])
			want := map[string]any{}
			for k, v := range base {
				want[k] = v
			}
			for k, v := range tc.want {
				want[k] = v
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v\nline %s", got, want, line)
			}
		})
	}
}

func TestAppendJSONCommEscaping(t *testing.T) {
	for _, tc := range []struct{ comm, want string }{
		{`say "hi"`, `say "hi"`},
		{`back\slash`, `back\slash`},
		{"tab\tnl\ncr\r", "tab\tnl\ncr\r"},
		{"bell\x07esc\x1b", "bell\x07esc\x1b"},
		{"del\x7f", "del\x7f"},
		{"café", "café"},
		{"bad\xffutf8", "bad\ufffdutf8"},
		{"cut\xc3", "cut\ufffd"}, // a rune cut by the 16-byte limit
	} {
		e := call(4, 3, 10, 10)
		setComm(&e, tc.comm)
		line := AppendJSON(nil, &e, Validate(&e), JSONOptions{})
		got := decodeJSONLine(t, line)["comm"]
		if got != tc.want {
			t.Errorf("comm %q: JSON %s decodes to %q, want %q", tc.comm, line, got, tc.want)
		}
		if !json.Valid(bytes.TrimSpace(line)) {
			t.Errorf("comm %q: invalid JSON %s", tc.comm, line)
		}
	}
}
