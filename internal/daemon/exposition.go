package daemon

import (
	"bufio"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// The groups' series are written in the text format directly rather than
// through client_golang's collectors: a thousand groups make some 35,000
// series, and building, checking and sorting a metric object for each took
// most of a scrape's CPU (bench/README.md has the figures).

// Histogram bounds, as internal/metrics: 2^10 ns to 2^34 ns.
const (
	firstBucket = 10
	lastBucket  = 34
)

// bucketBounds are the le labels, in seconds.
var bucketBounds = func() []string {
	var les []string
	for i := firstBucket; i <= lastBucket; i++ {
		les = append(les, strconv.FormatFloat(math.Ldexp(1, i)/1e9, 'g', -1, 64))
	}
	return les
}()

// family is one metric family of the groups: its header, and how each
// group's series are appended.
type family struct {
	name, typ, help string
	write           func(b []byte, g *groupTotals, labels []byte) []byte
}

var families = []family{
	{"sfwatch_sendfile_calls_total", "counter",
		"sendfile calls by group, result (ok, short, eof, empty, error) and errno (for errors; \"other\" past errno 135).",
		func(b []byte, g *groupTotals, l []byte) []byte {
			t := &g.totals
			b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="ok",errno=""`, g.ok)
			b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="short",errno=""`, t[loader.SfwatchCounterCOUNTER_SHORT])
			b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="eof",errno=""`, t[loader.SfwatchCounterCOUNTER_EOF])
			b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="empty",errno=""`, t[loader.SfwatchCounterCOUNTER_EMPTY])
			for e := 1; e < loader.RowErrnos; e++ {
				if n := t[loader.RowErrno+e]; n > 0 {
					b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="error",errno="`+events.ErrnoName(syscall.Errno(e))+`"`, n)
				}
			}
			if n := t[loader.RowErrno]; n > 0 {
				b = sample(b, "sfwatch_sendfile_calls_total", l, `,result="error",errno="other"`, n)
			}
			return b
		}},
	{"sfwatch_sendfile_bytes_total", "counter",
		"Bytes transferred by sendfile (sum of positive return values), by group.",
		func(b []byte, g *groupTotals, l []byte) []byte {
			return sample(b, "sfwatch_sendfile_bytes_total", l, "", g.totals[loader.SfwatchCounterCOUNTER_BYTES])
		}},
	{"sfwatch_sendfile_duration_seconds", "histogram",
		"Time from sendfile entry to exit, by group.",
		func(b []byte, g *groupTotals, l []byte) []byte {
			t := &g.totals
			var cum uint64
			for i, n := range t[loader.RowLatency : loader.RowLatency+loader.RowLatencyBuckets] {
				cum += n
				if i >= firstBucket && i <= lastBucket {
					b = sample(b, "sfwatch_sendfile_duration_seconds_bucket", l, `,le="`+bucketBounds[i-firstBucket]+`"`, cum)
				}
			}
			b = sample(b, "sfwatch_sendfile_duration_seconds_bucket", l, `,le="+Inf"`, cum)
			b = append(b, "sfwatch_sendfile_duration_seconds_sum"...)
			b = append(b, l...)
			b = append(b, "} "...)
			b = strconv.AppendFloat(b, float64(t[loader.SfwatchCounterCOUNTER_DURATION_NS])/1e9, 'g', -1, 64)
			b = append(b, '\n')
			return sample(b, "sfwatch_sendfile_duration_seconds_count", l, "", cum)
		}},
	{"sfwatch_sendfile_offset_total", "counter",
		"sendfile calls by group and kind of offset argument.",
		func(b []byte, g *groupTotals, l []byte) []byte {
			b = sample(b, "sfwatch_sendfile_offset_total", l, `,kind="null"`, g.totals[loader.SfwatchCounterCOUNTER_OFFSET_NULL])
			return sample(b, "sfwatch_sendfile_offset_total", l, `,kind="pointer"`, g.totals[loader.SfwatchCounterCOUNTER_OFFSET_PTR])
		}},
	{"sfwatch_sendfile_restarts_total", "counter",
		"sendfile calls interrupted by a signal before any byte moved and restarted by the kernel (SA_RESTART), by group; not in calls.",
		func(b []byte, g *groupTotals, l []byte) []byte {
			return sample(b, "sfwatch_sendfile_restarts_total", l, "", g.totals[loader.SfwatchCounterCOUNTER_RESTARTS])
		}},
}

// eventFamilies are the groups' series that need the calls' events
// (--events).
var eventFamilies = []family{
	{"sfwatch_sendfile_violations_total", "counter",
		"Delivered events that broke a rule of sendfile's contract, by group (one in --sample N is delivered).",
		func(b []byte, g *groupTotals, l []byte) []byte {
			return sample(b, "sfwatch_sendfile_violations_total", l, "", g.violations)
		}},
}

// sample appends `name{labels more} v`; labels is the group's, open.
func sample(b []byte, name string, labels []byte, more string, v uint64) []byte {
	b = append(b, name...)
	b = append(b, labels...)
	b = append(b, more...)
	b = append(b, "} "...)
	b = strconv.AppendUint(b, v, 10)
	return append(b, '\n')
}

// labelValue escapes v for the text format.
var labelValue = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// AppendGroups appends every group's series, in the text format, sorted
// by path.
func (d *Daemon) AppendGroups(b []byte) ([]byte, error) {
	all, err := d.snapshot(true)
	if err != nil {
		return b, err
	}
	// Sorted by reference: a group's totals are 1.5 KiB.
	order := make([]*groupTotals, len(all))
	for i := range all {
		order[i] = &all[i]
	}
	slices.SortFunc(order, func(x, y *groupTotals) int { return strings.Compare(x.path, y.path) })
	labels := make([][]byte, len(all))
	for i, g := range order {
		labels[i] = []byte(`{cgroup="` + labelValue.Replace(g.path) + `",pod_uid="` + g.podUID + `",container_id="` + g.containerID + `"`)
	}
	fams := families
	if d.Events() {
		fams = append(slices.Clip(fams), eventFamilies...)
	}
	for _, f := range fams {
		b = append(b, "# HELP "+f.name+" "+f.help+"\n# TYPE "+f.name+" "+f.typ+"\n"...)
		for i, g := range order {
			b = f.write(b, g, labels[i])
		}
	}
	return b, nil
}

// Handler serves reg's metrics and every group's series, in the text
// format. At most limit scrapes run at once; more get 503. A scrape that
// takes longer than timeout gets 503 too.
func Handler(d *Daemon, reg *prometheus.Registry, limit int, timeout time.Duration) http.Handler {
	slots := make(chan struct{}, limit)
	// A scrape's text, kept for the next: it is megabytes for a thousand
	// groups, and growing it anew each time was most of a scrape's work.
	bufs := sync.Pool{New: func() any { return new([]byte) }}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			http.Error(w, "too many scrapes at once", http.StatusServiceUnavailable)
			return
		}
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		groups, err := d.AppendGroups((*buf)[:0])
		*buf = groups
		if err != nil {
			http.Error(w, "reading the group totals: "+err.Error(), http.StatusInternalServerError)
			return
		}
		format := expfmt.NewFormat(expfmt.TypeTextPlain)
		w.Header().Set("Content-Type", string(format))
		bw := bufio.NewWriterSize(w, 64<<10)
		if err := writeRegistry(bw, reg, format); err != nil {
			// Headers are out: say it in the body, as promhttp does
			// with ContinueOnError.
			io.WriteString(bw, "# sfwatch: "+err.Error()+"\n")
		}
		bw.Write(groups)
		bw.Flush()
	})
	return http.TimeoutHandler(h, timeout, "scrape timed out\n")
}

func writeRegistry(w io.Writer, reg *prometheus.Registry, format expfmt.Format) error {
	fams, err := reg.Gather()
	enc := expfmt.NewEncoder(w, format)
	for _, f := range fams {
		if eerr := enc.Encode(f); eerr != nil {
			return eerr
		}
	}
	return err
}
