package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/daemon"
	"github.com/sfwatch/sfwatch/internal/events"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/server"
)

const daemonUsage = `Usage: sfwatch daemon [--watch PATH]... [--config FILE] [flags]

One observer for the machine: loads and attaches the programs once and keeps
exact sendfile(2) totals per cgroup v2 group for every thread in the watched
subtrees, including groups created later, until SIGINT or SIGTERM (then it
detaches, prints the accounting line and exits 0). SIGHUP re-reads --config.

Flags:
  --watch PATH         watch the subtree at PATH (absolute, or relative to the
                       cgroup2 mount, as attach --cgroup); repeatable. A path
                       that does not exist yet is watched once it is created
  --config FILE        more paths to watch, re-read on SIGHUP: one line
                       "watch PATH" each; blank lines and # comments ignored
  --group-depth N      count at depth N below the watched path instead of in
                       each thread's own group (default 0: the leaf)
  --max-groups N       groups with totals of their own (default 1024); calls of
                       more are counted under cgroup="_other"
  --retention DUR      keep the totals of a removed path this long (default 10m)
  --metrics            serve Prometheus metrics on 127.0.0.1:9464/metrics
  --metrics-addr ADDR  serve them on ADDR instead (e.g. :9464 for every interface)
  --web-config FILE    TLS and basic auth for the metrics server (exporter-toolkit format)
  --events FILE        also write every call's event to FILE, with its group's
                       path: text, "PATH<TAB>" then the strace line (run's);
                       json, run's object with a "cgroup" field first. Without
                       it the daemon keeps totals only, and a call costs no
                       more than that
  --format text|json   the events' format (default text)
  --sample N           with --events: the kernel emits one event per N calls
                       (counted per CPU); totals stay exact
  --ringbuf-size N     with --events: ring buffer bytes, a power of two up to
                       1073741824 (default 8388608)
  --lock FILE          the lock that keeps a second daemon from starting
                       (default /run/sfwatch/daemon.lock)

Clients ('sfwatch run', 'attach', 'selftest', sfwatch as strace and the Go
package) use the daemon through its socket: no programs to load, and no
privilege needed (but for attach, root's).
  --socket PATH        where clients connect (default $SFWATCH_SOCKET, else
                       /run/sfwatch/sfwatch.sock)
  --socket-mode MODE   the socket's permissions, octal (default 0660)
  --socket-group NAME  the socket's group (default sfwatch, when it exists; else,
                       and with "", root's): with mode 0660, its members and
                       root may connect
  --max-runs-per-user N  runs one uid may have at once (default 16; root: no limit)
  --max-ring-per-user N  bytes of ring buffer one uid's runs may hold together
                       (default 268435456; root: no limit)
  --favordynmods=false leave the cgroup2 mount as it is; by default the daemon
                       mounts it with favordynmods while it runs (moving a run's
                       process then takes 0.2 ms, not an RCU grace period of
                       8-16 ms), and puts it back when it stops

Exit codes: 0 (stopped by SIGINT or SIGTERM), 2 bad usage, 125 sfwatch failed
(another daemon runs, say).
`

// defaultDaemonLock is where the running daemon holds its lock.
const defaultDaemonLock = "/run/sfwatch/daemon.lock"

// maxDaemonConfigSize bounds --config: a watch list is a few lines.
const maxDaemonConfigSize = 1 << 20

type daemonFlags struct {
	watch        []string
	config       string
	groupDepth   int
	maxGroups    int
	retention    time.Duration
	metrics      bool
	metricsAddr  string
	webConfig    string
	webWhat      string
	lock         string
	events       string
	format       string
	sample       uint
	ringBufSize  int
	server       server.Config
	socketMode   string
	favordynmods bool
	socketNote   string // why the socket is root's only, if it is by default
}

type stringList struct{ list *[]string }

func (s stringList) String() string { return "" }
func (s stringList) Set(v string) error {
	*s.list = append(*s.list, v)
	return nil
}

// readDaemonConfig reads the watch list of a --config file.
func readDaemonConfig(path string) ([]string, error) {
	data, err := readConfigFile(path, maxDaemonConfigSize)
	if err != nil {
		return nil, err
	}
	var paths []string
	s := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		value = strings.TrimSpace(value)
		if key != "watch" || value == "" {
			return nil, fmt.Errorf("line %d: %q: want \"watch PATH\"", n, line)
		}
		paths = append(paths, value)
	}
	return paths, s.Err()
}

// watchList is the flags' paths and the config file's, each checked: a
// path out of the cgroup2 mount, or a file, is bad usage.
func (f *daemonFlags) watchList(mount string) ([]string, error) {
	paths := f.watch
	if f.config != "" {
		more, err := readDaemonConfig(f.config)
		if err != nil {
			return nil, fmt.Errorf("--config %s: %w", f.config, err)
		}
		paths = append(paths[:len(paths):len(paths)], more...)
	}
	for _, p := range paths {
		if _, err := daemon.CheckWatch(mount, p); err != nil {
			return nil, err
		}
	}
	if len(paths) > loader.MaxWatches {
		return nil, fmt.Errorf("%d paths to watch: at most %d", len(paths), loader.MaxWatches)
	}
	return paths, nil
}

func daemonCommand(ctx context.Context, args []string) error {
	// Held from the start: a signal while the programs load must not kill
	// the daemon before it can detach and report.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var f daemonFlags
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	fs.Var(stringList{&f.watch}, "watch", "")
	fs.StringVar(&f.config, "config", "", "")
	fs.IntVar(&f.groupDepth, "group-depth", 0, "")
	fs.IntVar(&f.maxGroups, "max-groups", loader.DefaultMaxGroups, "")
	fs.DurationVar(&f.retention, "retention", daemon.DefaultRetention, "")
	fs.BoolVar(&f.metrics, "metrics", false, "")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "")
	fs.StringVar(&f.webConfig, "web-config", "", "")
	fs.StringVar(&f.lock, "lock", defaultDaemonLock, "")
	fs.StringVar(&f.events, "events", "", "")
	fs.StringVar(&f.format, "format", "text", "")
	fs.UintVar(&f.sample, "sample", 1, "")
	fs.IntVar(&f.ringBufSize, "ringbuf-size", loader.DefaultRingBufSize, "")
	fs.StringVar(&f.server.Socket, "socket", "", "")
	fs.StringVar(&f.socketMode, "socket-mode", "0660", "")
	fs.StringVar(&f.server.SocketGroup, "socket-group", server.DefaultSocketGroup, "")
	fs.IntVar(&f.server.MaxRunsPerUser, "max-runs-per-user", server.DefaultMaxRunsPerUser, "")
	fs.IntVar(&f.server.MaxRingsPerUser, "max-ring-per-user", server.DefaultMaxRingsPerUser, "")
	fs.BoolVar(&f.favordynmods, "favordynmods", true, "")
	if err := parse(fs, args, daemonUsage); err != nil {
		return err
	}
	if err := f.checkServer(fs); err != nil {
		return err
	}
	if err := f.checkEvents(fs); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("daemon: unexpected argument %q; see 'sfwatch daemon --help'", fs.Arg(0))
	}
	if f.groupDepth < 0 || f.groupDepth > 31 {
		return usageError("daemon: --group-depth %d: want 0 to 31", f.groupDepth)
	}
	if err := loader.ValidateMaxGroups(f.maxGroups); err != nil {
		return usageError("daemon: --max-groups: %v", err)
	}
	if f.retention <= 0 {
		return usageError("daemon: --retention %v: want a positive duration, e.g. 10m", f.retention)
	}
	if f.metricsAddr != "" {
		if err := checkListenAddr(f.metricsAddr); err != nil {
			return usageError("daemon: --metrics-addr %s: %v; want HOST:PORT, e.g. 127.0.0.1:9464 or :9464", f.metricsAddr, err)
		}
	}
	addr := f.metricsAddr
	if addr == "" && f.metrics {
		addr = defaultMetricsAddr
	}
	if f.webConfig != "" {
		if addr == "" {
			return usageError("daemon: --web-config needs --metrics or --metrics-addr")
		}
		var err error
		if f.webWhat, err = checkWebConfig(f.webConfig); err != nil {
			return usageError("daemon: --web-config %s: %v", f.webConfig, err)
		}
	}
	mount, err := cgroup.Mount()
	if err != nil {
		return err
	}
	paths, err := f.watchList(mount)
	if err != nil {
		return usageError("daemon: %v", err)
	}
	if err := requirePrivileges("daemon"); err != nil {
		return err
	}
	if err := loader.CheckKernel(); err != nil {
		return err
	}
	unlock, err := lockDaemon(f.lock)
	if err != nil {
		return err
	}
	defer unlock()

	cfg := daemon.Config{
		Watch:       paths,
		GroupDepth:  f.groupDepth,
		MaxGroups:   f.maxGroups,
		Retention:   f.retention,
		Log:         stderr,
		RingBufSize: f.ringBufSize,
		SampleEvery: uint32(f.sample),
	}
	var stream *daemonStream
	var out *boundedWriter
	if f.events != "" {
		var closeOut func()
		if out, closeOut, err = openBounded(f.events, "--events "+f.events); err != nil {
			return err
		}
		defer closeOut()
		stream = &daemonStream{streamSink: newStreamSink(out, f.format, events.TextOptions{})}
		cfg.Events = stream
	}
	d, err := daemon.Start(mount, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	if f.favordynmods {
		restore, err := cgroup.FavorDynmods()
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "sfwatch: %v: a client run may wait 8-16 ms more to move its process\n", err)
		case restore != nil:
			fmt.Fprintln(stderr, "sfwatch: cgroup2 mounted with favordynmods until the daemon stops (--favordynmods=false leaves the mount as it is)")
			defer func() {
				if err := restore(); err != nil {
					fmt.Fprintf(stderr, "sfwatch: %v\n", err)
				}
			}()
		}
	}
	if f.socketNote != "" {
		fmt.Fprintln(stderr, f.socketNote)
	}
	f.server.Log = stderr
	srv, err := server.Listen(d, f.server)
	if err != nil {
		return err
	}
	// Before the programs detach: the runs' groups are killed and
	// removed, and their clients told, while every call is still counted.
	defer srv.Close()
	if addr != "" {
		h := daemon.Handler(d, daemon.NewRegistry(d, versionNumber()), maxConcurrentScrapes, scrapeTimeout)
		srv, err := serveMetrics(addr, f.webConfig, f.webWhat, h)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	fmt.Fprintf(stderr, "sfwatch: daemon %d watching %d paths, clients on %s, until SIGINT or SIGTERM (SIGHUP re-reads the watch list)\n", os.Getpid(), len(paths), f.server.Socket)

	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-ctx.Done():
			sig = syscall.SIGTERM
		}
		if sig != syscall.SIGHUP {
			break
		}
		paths, err := f.watchList(mount)
		if err == nil {
			err = d.SetWatch(paths)
		}
		if err != nil {
			fmt.Fprintf(stderr, "sfwatch: SIGHUP: %v; the watch list stays as it was\n", err)
			continue
		}
		fmt.Fprintf(stderr, "sfwatch: SIGHUP: watching %d paths\n", len(paths))
	}
	if out != nil {
		// Ending: an output that takes no data now is given up on.
		stderr.bound()
		out.bound()
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "sfwatch: closing the socket: %v\n", err)
	}
	if err := d.Detach(); err != nil {
		return err
	}
	fmt.Fprintln(stderr, daemonAccounting(d))
	if stream != nil {
		if err := stream.Close(); err != nil {
			return fmt.Errorf("writing events: %w", err)
		}
	}
	return nil
}

// checkServer checks the socket's flags. The default group that does not
// exist leaves the socket to root (said when the daemon starts); a
// --socket-group that does not exist is bad usage.
func (f *daemonFlags) checkServer(fs *flag.FlagSet) error {
	f.server.Socket = client.Socket(f.server.Socket)
	if g := f.server.SocketGroup; g != "" {
		if _, err := user.LookupGroup(g); err != nil {
			explicit := false
			fs.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == "socket-group" })
			if explicit {
				return usageError("daemon: --socket-group %s: %v; create it (groupadd --system %s) or name another", g, err, g)
			}
			f.socketNote = fmt.Sprintf("sfwatch: no group %s: only root may use %s; to let users run through the daemon, groupadd --system %s and add them, or pass --socket-group", g, f.server.Socket, g)
			f.server.SocketGroup = ""
		}
	}
	mode, err := strconv.ParseUint(f.socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return usageError("daemon: --socket-mode %q: want octal permissions, e.g. 0660 (owner root, the group of --socket-group)", f.socketMode)
	}
	f.server.SocketMode = os.FileMode(mode)
	if f.server.MaxRunsPerUser < 1 {
		return usageError("daemon: --max-runs-per-user %d: want 1 or more", f.server.MaxRunsPerUser)
	}
	if f.server.MaxRingsPerUser < os.Getpagesize() {
		return usageError("daemon: --max-ring-per-user %d: want at least a page, %d bytes", f.server.MaxRingsPerUser, os.Getpagesize())
	}
	return nil
}

// checkEvents checks the flags of --events: the others need it.
func (f *daemonFlags) checkEvents(fs *flag.FlagSet) error {
	if f.events == "" {
		var set []string
		fs.Visit(func(fl *flag.Flag) {
			if fl.Name == "format" || fl.Name == "sample" || fl.Name == "ringbuf-size" {
				set = append(set, "--"+fl.Name)
			}
		})
		if len(set) > 0 {
			return usageError("daemon: %s needs --events FILE", strings.Join(set, " and "))
		}
		return nil
	}
	if f.format != "text" && f.format != "json" {
		return usageError("daemon: --format %q: want text or json", f.format)
	}
	if err := loader.ValidateRingBufSize(f.ringBufSize); err != nil {
		return usageError("daemon: --ringbuf-size: %v", err)
	}
	if f.sample == 0 || f.sample > 1<<31 {
		return usageError("daemon: --sample %d: want N >= 1 (one event per N calls)", f.sample)
	}
	return checkOutputs("daemon", []outputFile{{"--events", f.events}})
}

// daemonStream writes each event as run does, with its group's path: text
// lines start with the path and a tab, JSON objects with a "cgroup" field.
type daemonStream struct {
	*streamSink
	prefixes map[string][]byte // by path: what goes before run's line
}

// maxPrefixes bounds daemonStream.prefixes; past it, it starts over.
const maxPrefixes = 4096

func (s *daemonStream) Event(path string, e *events.Event, v events.Verdict) {
	if s.err != nil {
		return // the output is gone (a closed pipe): stop rendering
	}
	p, ok := s.prefixes[path]
	if !ok {
		p = groupPrefix(path, s.json)
		if s.prefixes == nil || len(s.prefixes) >= maxPrefixes {
			s.prefixes = make(map[string][]byte)
		}
		s.prefixes[path] = p
	}
	s.line = append(s.line[:0], p...)
	if s.json {
		// p opens the object: AppendJSON's '{' goes.
		s.line = events.AppendJSON(s.line, e, v, s.jsonOptions)
		s.line = append(s.line[:len(p)], s.line[len(p)+1:]...)
	} else {
		s.line = s.text.Append(s.line, e, v)
	}
	_, s.err = s.w.Write(s.line)
}

// groupPrefix is what goes before an event of the group at path: for
// JSON, `{"cgroup":"PATH",`; for text, PATH and a tab, with a tab, newline
// or backslash in it escaped as \t, \n, \\.
func groupPrefix(path string, asJSON bool) []byte {
	if asJSON {
		b, _ := json.Marshal(path)
		return append(append([]byte(`{"cgroup":`), b...), ',')
	}
	return []byte(textPathEscaper.Replace(path) + "\t")
}

var textPathEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`)

// daemonAccounting is the last line: what the kernel counted, where.
func daemonAccounting(d *daemon.Daemon) string {
	totals, err := d.Snapshot()
	if err != nil {
		return fmt.Sprintf("sfwatch: reading the totals: %v", err)
	}
	var calls uint64
	for _, t := range totals {
		calls += t.Calls()
	}
	other := totals[daemon.Other]
	line := fmt.Sprintf("sfwatch: %d calls counted in the kernel in %d groups (%d under %s)", calls, len(totals)-1, other.Calls(), daemon.Other)
	if d.Events() {
		var lost, sampled, violations uint64
		for _, t := range totals {
			lost += t.Get(loader.SfwatchCounterCOUNTER_LOST)
			sampled += t.Get(loader.SfwatchCounterCOUNTER_SAMPLED_OUT)
		}
		for _, n := range d.Violations() {
			violations += n
		}
		line += fmt.Sprintf(", %d events delivered, %d lost", d.Delivered(), lost)
		if sampled > 0 {
			line += fmt.Sprintf(", %d sampled out", sampled)
		}
		line += fmt.Sprintf(", %d violations", violations)
	}
	if skipped, err := d.Skipped(); err == nil {
		var n uint64
		for _, s := range skipped {
			n += s
		}
		if n > 0 {
			line += fmt.Sprintf(", %d program runs skipped by the kernel: totals are lower bounds", n)
		}
	}
	return line
}

// lockDaemon takes the machine's daemon lock, or says which daemon holds
// it. The lock goes with the process, however it ends.
func lockDaemon(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the daemon lock %s: %w", path, err)
	}
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the daemon lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer file.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another sfwatch daemon runs: %s (it holds %s)", lockHolder(file), path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	file.Truncate(0)
	file.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		file.Truncate(0)
		file.Close()
	}, nil
}

// lockHolder names the daemon that wrote its pid in the lock file.
func lockHolder(file *os.File) string {
	buf := make([]byte, 32)
	n, _ := file.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return "pid unknown"
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return "pid " + strconv.Itoa(pid)
	}
	return fmt.Sprintf("pid %d, %s", pid, strings.Join(strings.Fields(strings.ReplaceAll(string(cmdline), "\x00", " ")), " "))
}
