package daemon

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sfwatch/sfwatch/internal/loader"
)

var (
	watchedDesc = prometheus.NewDesc("sfwatch_watched_groups",
		"Groups (paths) with totals: those that called sendfile, removed ones until the retention passes; _other not included.", nil, nil)
	overflowDesc = prometheus.NewDesc("sfwatch_groups_overflow_total",
		"sendfile calls counted under cgroup=\"_other\" because --max-groups groups had totals of their own.", nil, nil)
	unpairedDesc = prometheus.NewDesc("sfwatch_sendfile_unpaired_total",
		"sendfile exits without a seen entry (calls in flight when the daemon started); not in calls.", nil, nil)
	groupsLostDesc = prometheus.NewDesc("sfwatch_group_events_lost_total",
		"Group creations and removals the kernel could not tell the daemon (ring buffer full); it then looks in the cgroup file system.", nil, nil)
	lostDesc = prometheus.NewDesc("sfwatch_events_lost_total",
		"Events dropped because the ring buffer was full; totals stay exact. Without --events the daemon keeps totals only: 0.", nil, nil)
	skippedDesc = prometheus.NewDesc("sfwatch_programs_skipped_total",
		"Times the kernel did not run one of sfwatch's programs (its recursion misses); not zero, calls may be missing from the totals.", []string{"program"}, nil)
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
	for _, d := range []*prometheus.Desc{watchedDesc, overflowDesc, unpairedDesc, groupsLostDesc, lostDesc, skippedDesc} {
		ch <- d
	}
}

// Collect reads the daemon's own counters; the groups' series are written
// by WriteGroups.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(watchedDesc, prometheus.GaugeValue, float64(c.d.Groups()))
	if cs, err := c.d.Counters(); err == nil {
		counter(overflowDesc, cs[loader.DaemonDaemonCounterDAEMON_OVERFLOW])
		counter(unpairedDesc, cs[loader.DaemonDaemonCounterDAEMON_UNPAIRED])
		counter(groupsLostDesc, cs[loader.DaemonDaemonCounterDAEMON_GROUPS_LOST])
	} else {
		ch <- prometheus.NewInvalidMetric(overflowDesc, err)
	}
	if lost, err := c.d.EventsLost(); err == nil {
		counter(lostDesc, lost)
	} else {
		ch <- prometheus.NewInvalidMetric(lostDesc, err)
	}
	if skipped, err := c.d.Skipped(); err == nil {
		for prog, n := range skipped {
			counter(skippedDesc, n, prog)
		}
	} else {
		ch <- prometheus.NewInvalidMetric(skippedDesc, err)
	}
}
