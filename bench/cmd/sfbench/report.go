package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// table renders every workload's results and the targets as Markdown.
func (b *bench) table(wls []*workload, obs []*observer) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Date: %s. Machine: %s.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	fmt.Fprintf(&sb, "Loop: %d calls (bpftrace %d, perf trace %d, strace %d, each compared with untraced at the same count), %d repetitions (%d for those tools); servers: wrk -t%d -c%d, %v measured after %v warm-up, %d repetitions (%d for bpftrace, perf trace, strace). Observers alternate within each repetition; every run waits for a quiet machine, and %d runs were done again because other processes used more than 0.25 CPU (loop) or 0.5 CPU (servers) meanwhile.\n",
		b.c.n, b.c.n/5, b.c.n/10, b.c.n/50, b.c.reps, min(b.c.reps, b.c.toolReps), b.c.wrkThreads, b.c.wrkConns, b.c.duration, b.c.warmup, b.c.serverReps, min(b.c.serverReps, b.c.toolReps), b.disturbed)
	fmt.Fprintf(&sb, "sfwatch's own CPU for a run with no call at all (start-up, attach, detach): %.1f ms; \"steady\" below is the CPU per event without it.\n", b.startupNs/1e6)
	for _, w := range wls {
		fmt.Fprintf(&sb, "\n### %s: %s\n\n", w.name, w.about)
		if w.loop() {
			sb.WriteString("| observer | calls | loop time, median [min–max] | vs untraced: median of pairs [min–max] | own CPU/event | peak RSS | delivered | lost |\n")
			sb.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
		} else {
			sb.WriteString("| observer | req/s, median [min–max] | vs untraced: median of pairs [min–max] | own CPU/event | peak RSS | events delivered | lost |\n")
			sb.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
		}
		for _, o := range obs {
			for _, n := range b.counts(w, o) {
				if row := b.row(w, o, n); row != "" {
					sb.WriteString(row)
				}
			}
		}
	}
	sb.WriteString(b.targets())
	return sb.String()
}

// counts lists the call counts o ran with on w (untraced runs at several).
func (b *bench) counts(w *workload, o *observer) []int {
	var ns []int
	for _, r := range b.runs {
		if r.Workload == w.name && r.Observer == o.name && !slices.Contains(ns, r.N) {
			ns = append(ns, r.N)
		}
	}
	slices.Sort(ns)
	slices.Reverse(ns)
	return ns
}

func (b *bench) select_(w, o string, n int) []runResult {
	var out []runResult
	for _, r := range b.runs {
		if r.Workload == w && r.Observer == o && r.N == n && r.Err == "" {
			out = append(out, r)
		}
	}
	return out
}

// figure is the workload's own measure: loop seconds, or requests/s.
func figure(r runResult) float64 {
	if r.N > 0 {
		return r.Seconds
	}
	return r.ReqPerS
}

// ratio compares o with untraced at the same call count: the median of
// the ratios of runs paired by repetition (a pair ran within seconds of
// each other, so slow drifts of a shared machine cancel out), and their
// range. Without pairs, the ratio of the medians.
func (b *bench) ratio(w *workload, o string, n int) (med, lo, hi float64, ok bool) {
	base := b.select_(w.name, "untraced", n)
	runs := b.select_(w.name, o, n)
	if len(base) == 0 || len(runs) == 0 {
		return 0, 0, 0, false
	}
	var qs []float64
	for _, r := range runs {
		for _, u := range base {
			if u.Rep == r.Rep {
				qs = append(qs, figure(r)/figure(u))
			}
		}
	}
	if len(qs) == 0 {
		m := median(mapf(runs, figure)) / median(mapf(base, figure))
		return m, m, m, true
	}
	return median(qs), slices.Min(qs), slices.Max(qs), true
}

func (b *bench) row(w *workload, o *observer, n int) string {
	runs := b.select_(w.name, o.name, n)
	var errs []string
	for _, r := range b.runs {
		if r.Workload == w.name && r.Observer == o.name && r.N == n && r.Err != "" {
			errs = append(errs, r.Err)
		}
	}
	name := o.name
	if o.name == "untraced" && w.loop() && n != b.c.n {
		name = fmt.Sprintf("untraced (n=%s)", short(n))
	}
	if len(runs) == 0 {
		return fmt.Sprintf("| %s | failed: %s |\n", name, strings.Join(errs, "; "))
	}
	figs := mapf(runs, figure)
	var fig string
	if w.loop() {
		fig = fmt.Sprintf("%.3f s [%.3f–%.3f]", median(figs), slices.Min(figs), slices.Max(figs))
	} else {
		fig = fmt.Sprintf("%.0f [%.0f–%.0f]", median(figs), slices.Min(figs), slices.Max(figs))
	}
	vs := "1.00x"
	if o.name != "untraced" {
		if m, lo, hi, ok := b.ratio(w, o.name, n); ok {
			vs = fmt.Sprintf("%.2fx [%.2f–%.2f]", m, lo, hi)
		}
	}
	cpu := "–"
	if o.name != "untraced" && o.name != "floor" {
		var per []float64
		for _, r := range runs {
			if r.Calls > 0 {
				per = append(per, float64(r.CPUNs)/float64(r.Calls))
			}
		}
		if len(per) > 0 {
			cpu = fmt.Sprintf("%.0f ns", median(per))
			if strings.HasPrefix(o.name, "sfwatch") && b.startupNs > 0 && runs[0].CPUHow == "rusage-minus-workload" {
				var steady []float64
				for _, r := range runs {
					if r.Calls > 0 {
						steady = append(steady, (float64(r.CPUNs)-b.startupNs)/float64(r.Calls))
					}
				}
				cpu += fmt.Sprintf(" (%.0f steady)", median(steady))
			}
			if runs[0].CPUHow == "proc-stat" {
				cpu += " (±10 ms ticks)"
			}
		}
	}
	rss := fmt.Sprintf("%.1f MiB", median(mapf(runs, func(r runResult) float64 { return float64(r.RSSKiB) / 1024 })))
	delivered, lost := "–", "–"
	if runs[0].Events >= 0 {
		var fr []float64
		for _, r := range runs {
			if r.Calls > 0 {
				fr = append(fr, float64(r.Events)/float64(r.Calls))
			}
		}
		switch {
		case o.name == "sfwatch-sample100":
			delivered = fmt.Sprintf("%.2f%% (1 in 100)", 100*median(fr))
		case len(fr) > 0:
			delivered = fmt.Sprintf("%.2f%%", 100*median(fr))
		default:
			delivered = fmt.Sprint(runs[0].Events)
		}
		if !w.loop() {
			delivered = fmt.Sprintf("%d (%s)", int(median(mapf(runs, func(r runResult) float64 { return float64(r.Events) }))), delivered)
		}
	}
	if runs[0].Lost >= 0 {
		lost = fmt.Sprint(slices.Max(mapf(runs, func(r runResult) float64 { return float64(r.Lost) })))
	}
	calls := ""
	if w.loop() {
		calls = short(n)
		return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, calls, fig, vs, cpu, rss, delivered, lost)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s |\n", name, fig, vs, cpu, rss, delivered, lost)
}

// targets checks sfwatch's performance targets (bench/README.md, Targets)
// against loop-1t and the servers.
func (b *bench) targets() string {
	var sb strings.Builder
	sb.WriteString("\n### Targets\n\n| target | measured | met |\n|---|---|---|\n")
	check := func(name, measured string, ok bool) {
		mark := "yes"
		if !ok {
			mark = "**no**"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s |\n", name, measured, mark)
	}
	for _, w := range workloads {
		if !w.loop() {
			continue
		}
		n := b.c.n
		full, _, _, okF := b.ratio(w, "sfwatch", n)
		quiet, _, _, okQ := b.ratio(w, "sfwatch-quiet", n)
		floor, _, _, okFl := b.ratio(w, "floor", n)
		if okF {
			runs := b.select_(w.name, "sfwatch", n)
			lost := slices.Max(mapf(runs, func(r runResult) float64 { return float64(r.Lost) }))
			all := true
			for _, r := range runs {
				all = all && r.Events == r.Calls
			}
			check(w.name+": full stream ≤ 1.7x untraced, all delivered, 0 lost",
				fmt.Sprintf("%.2fx, lost %v, all delivered: %v", full, lost, all), full <= 1.7 && lost == 0 && all)
		}
		if okQ && okFl {
			check(w.name+": --quiet within 5% of the floor", fmt.Sprintf("%.2fx vs floor %.2fx (%+.1f%%)", quiet, floor, 100*(quiet/floor-1)), quiet <= floor*1.05)
		}
		// Time per call, each tool normalized by its own untraced
		// baseline (same count, same repetitions): ratio of the ratios.
		if bt, _, _, ok := b.ratio(w, "bpftrace", n/5); ok && okF {
			check(w.name+": ≥ 5x faster than bpftrace (slowdown ratio)", fmt.Sprintf("%.1fx (%.2fx vs %.2fx)", bt/full, bt, full), bt/full >= 5)
		}
		if pt, _, _, ok := b.ratio(w, "perf-trace", n/10); ok && okF {
			check(w.name+": ≥ 20x faster than perf trace (slowdown ratio)", fmt.Sprintf("%.1fx (%.2fx vs %.2fx)", pt/full, pt, full), pt/full >= 20)
		}
		for _, o := range []string{"sfwatch", "sfwatch-quiet"} {
			if runs := b.select_(w.name, o, n); len(runs) > 0 {
				cpu := median(mapf(runs, func(r runResult) float64 { return float64(r.CPUNs) / float64(max(r.Calls, 1)) }))
				rss := median(mapf(runs, func(r runResult) float64 { return float64(r.RSSKiB) / 1024 }))
				check(w.name+": "+o+" own CPU < 150 ns/event", fmt.Sprintf("%.0f ns", cpu), cpu < 150)
				check(w.name+": "+o+" RSS < 40 MiB", fmt.Sprintf("%.1f MiB", rss), rss < 40)
			}
		}
	}
	for _, w := range workloads {
		if w.loop() {
			continue
		}
		for _, t := range []struct {
			o     string
			limit float64
		}{{"sfwatch-quiet", 0.03}, {"sfwatch", 0.05}} {
			if m, _, _, ok := b.ratio(w, t.o, 0); ok {
				check(fmt.Sprintf("%s: %s throughput within %.0f%% of untraced", w.name, t.o, 100*t.limit),
					fmt.Sprintf("%.3fx", m), m >= 1-t.limit)
			}
		}
	}
	return sb.String()
}

func short(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func mapf(runs []runResult, f func(runResult) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
