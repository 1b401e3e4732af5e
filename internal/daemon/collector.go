package daemon

import (
	"math"
	"runtime"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
)

// The series of one group carry these labels first.
var groupLabels = []string{"cgroup", "pod_uid", "container_id"}

func groupDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("sfwatch_"+name, help, append(groupLabels[:len(groupLabels):len(groupLabels)], labels...), nil)
}

var (
	callsDesc = groupDesc("sendfile_calls_total",
		"sendfile calls by group, result (ok, short, eof, error) and errno (for errors).", "result", "errno")
	bytesDesc = groupDesc("sendfile_bytes_total",
		"Bytes transferred by sendfile (sum of positive return values), by group.")
	durationDesc = groupDesc("sendfile_duration_seconds",
		"Time from sendfile entry to exit, by group.")
	offsetDesc = groupDesc("sendfile_offset_total",
		"sendfile calls by group and kind of offset argument.", "kind")
	restartsDesc = groupDesc("sendfile_restarts_total",
		"sendfile calls interrupted by a signal before any byte moved and restarted by the kernel (SA_RESTART), by group; not in calls.")
	watchedDesc = prometheus.NewDesc("sfwatch_watched_groups",
		"Groups (paths) with totals: those that called sendfile, removed ones until the retention passes; _other not included.", nil, nil)
	overflowDesc = prometheus.NewDesc("sfwatch_groups_overflow_total",
		"sendfile calls counted under cgroup=\"_other\" because --max-groups groups had totals of their own.", nil, nil)
	unpairedDesc = prometheus.NewDesc("sfwatch_sendfile_unpaired_total",
		"sendfile exits without a seen entry (calls in flight when the daemon started); not in calls.", nil, nil)
	groupsLostDesc = prometheus.NewDesc("sfwatch_group_events_lost_total",
		"Group creations and removals the kernel could not tell the daemon (ring buffer full); it then looks in the cgroup file system.", nil, nil)
	lostDesc = prometheus.NewDesc("sfwatch_events_lost_total",
		"Events dropped because the ring buffer was full; totals stay exact. The daemon keeps totals only: 0.", nil, nil)
	skippedDesc = prometheus.NewDesc("sfwatch_programs_skipped_total",
		"Times the kernel did not run one of sfwatch's programs (its recursion misses); not zero, calls may be missing from the totals.", []string{"program"}, nil)
)

// Histogram bounds, as internal/metrics: 2^10 ns to 2^34 ns.
const (
	firstBucket = 10
	lastBucket  = 34
)

// NewRegistry returns a registry with d's collector, build info and the Go
// and process collectors (never the global registry).
func NewRegistry(d *Daemon, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sfwatch", Name: "build_info",
		Help: "sfwatch's version.", ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	buildInfo.Set(1)
	reg.MustRegister(collector{d}, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

type collector struct{ d *Daemon }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{callsDesc, bytesDesc, durationDesc, offsetDesc, restartsDesc,
		watchedDesc, overflowDesc, unpairedDesc, groupsLostDesc, lostDesc, skippedDesc} {
		ch <- d
	}
}

// Collect reads the kernel's rows once per scrape.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	totals, err := c.d.snapshot(true)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(callsDesc, err)
		return
	}
	for _, g := range totals {
		t := &g.totals
		l := []string{g.path, g.podUID, g.containerID}
		with := func(more ...string) []string { return append(l[:3:3], more...) }
		counter(callsDesc, g.ok, with("ok", "")...)
		counter(callsDesc, t[loader.SfwatchCounterCOUNTER_SHORT], with("short", "")...)
		counter(callsDesc, t[loader.SfwatchCounterCOUNTER_EOF], with("eof", "")...)
		for e := 1; e < loader.RowErrnos; e++ {
			if n := t[loader.RowErrno+e]; n > 0 {
				counter(callsDesc, n, with("error", events.ErrnoName(syscall.Errno(e)))...)
			}
		}
		if n := t[loader.RowErrno]; n > 0 {
			counter(callsDesc, n, with("error", "other")...)
		}
		counter(bytesDesc, t[loader.SfwatchCounterCOUNTER_BYTES], l...)
		counter(offsetDesc, t[loader.SfwatchCounterCOUNTER_OFFSET_NULL], with("null")...)
		counter(offsetDesc, t[loader.SfwatchCounterCOUNTER_OFFSET_PTR], with("pointer")...)
		counter(restartsDesc, t[loader.SfwatchCounterCOUNTER_RESTARTS], l...)
		bkts, count := buckets(t[loader.RowLatency : loader.RowLatency+loader.RowLatencyBuckets])
		ch <- prometheus.MustNewConstHistogram(durationDesc, count,
			float64(t[loader.SfwatchCounterCOUNTER_DURATION_NS])/1e9, bkts, l...)
	}
	ch <- prometheus.MustNewConstMetric(watchedDesc, prometheus.GaugeValue, float64(len(totals)-1))
	if cs, err := c.d.Counters(); err == nil {
		counter(overflowDesc, cs[loader.DaemonDaemonCounterDAEMON_OVERFLOW])
		counter(unpairedDesc, cs[loader.DaemonDaemonCounterDAEMON_UNPAIRED])
		counter(groupsLostDesc, cs[loader.DaemonDaemonCounterDAEMON_GROUPS_LOST])
	} else {
		ch <- prometheus.NewInvalidMetric(overflowDesc, err)
	}
	counter(lostDesc, 0)
	if skipped, err := c.d.Skipped(); err == nil {
		for prog, n := range skipped {
			counter(skippedDesc, n, prog)
		}
	} else {
		ch <- prometheus.NewInvalidMetric(skippedDesc, err)
	}
}

// buckets turns the row's log2 buckets (i: [2^(i-1), 2^i) ns, the last
// open-ended) into Prometheus' cumulative ones in seconds, and the count.
func buckets(log2 []uint64) (map[float64]uint64, uint64) {
	out := make(map[float64]uint64, lastBucket-firstBucket+1)
	var cum uint64
	for i, n := range log2 {
		cum += n
		if i >= firstBucket && i <= lastBucket {
			out[math.Ldexp(1, i)/1e9] = cum
		}
	}
	return out, cum
}
