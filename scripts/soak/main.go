// Command soak runs a sendfile-heavy child under `sfwatch run` for a while
// and prints, at intervals, what a long run costs sfwatch: resident memory
// (now and peak), open descriptors, goroutines, and events delivered and
// lost. At the end it checks that memory, descriptors and goroutines stayed
// flat and that every call was delivered or counted as lost, and exits 1
// when not. As root:
//
//	go run ./scripts/soak -sfwatch ./sfwatch -seconds 600
//	make soak SOAK_SECONDS=600
//
// The child is this program itself (soak -child THREADS): THREADS threads
// calling sendfile(2) in a loop, 4 KiB from a file to /dev/null, until
// SIGTERM. Each -interval it scrapes sfwatch's /metrics (go_goroutines,
// process_open_fds, process_resident_memory_bytes, sfwatch_*) and reads
// VmHWM from /proc/PID/status.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-child" {
		threads, _ := strconv.Atoi(os.Args[2])
		if err := child(threads); err != nil {
			fmt.Fprintln(os.Stderr, "soak child:", err)
			os.Exit(1)
		}
		return
	}
	bin := flag.String("sfwatch", "./sfwatch", "the sfwatch binary")
	seconds := flag.Int("seconds", 20, "how long to run")
	interval := flag.Duration("interval", 0, "time between samples (default: seconds/10, at least 1s)")
	threads := flag.Int("threads", 2, "threads of the child calling sendfile")
	ringbuf := flag.Int("ringbuf-size", 0, "sfwatch --ringbuf-size (0: sfwatch's default)")
	sample := flag.Int("sample", 1, "sfwatch --sample")
	output := flag.String("o", os.DevNull, "sfwatch -o: where the events go (text)")
	quiet := flag.Bool("quiet", false, "sfwatch --quiet: no per-event output")
	maxHWM := flag.Int("max-hwm-mib", 64, "fail when sfwatch's peak RSS exceeds this")
	flag.Parse()
	if *interval == 0 {
		*interval = max(time.Second, time.Duration(*seconds)*time.Second/10)
	}
	if err := soak(*bin, time.Duration(*seconds)*time.Second, *interval, *threads, *ringbuf, *sample, *output, *quiet, *maxHWM); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is one look at the sfwatch process.
type sample struct {
	at                         time.Duration
	calls, delivered, lost     float64
	sampledOut                 float64
	rss, hwm                   uint64 // bytes
	fds, goroutines, heapInuse float64
	scrapeErr                  error
}

func soak(bin string, d, interval time.Duration, threads, ringbuf, sampleEvery int, output string, quiet bool, maxHWMMiB int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{"run", "--metrics-addr", addr, "--sample", strconv.Itoa(sampleEvery),
		"-o", output, "--user", strconv.Itoa(os.Getuid())}
	if quiet {
		args = append(args, "--quiet")
	}
	if ringbuf > 0 {
		args = append(args, "--ringbuf-size", strconv.Itoa(ringbuf))
	}
	args = append(args, "--", self, "-child", strconv.Itoa(threads))
	cmd := exec.Command(bin, args...)
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = os.Stdout, &stderr
	fmt.Printf("soak: %s %s\n", bin, strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	pid := cmd.Process.Pid
	url := "http://" + addr + "/metrics"

	fmt.Printf("%8s %12s %12s %10s %10s %9s %9s %5s %10s %10s\n",
		"elapsed", "calls", "delivered", "lost", "calls/s", "rss_mib", "hwm_mib", "fds", "goroutines", "heap_mib")
	var samples []sample
	var prev sample
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.After(d)
loop:
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("sfwatch exited early (%v); stderr:\n%s", err, stderr.String())
		case <-deadline:
			break loop
		case <-tick.C:
		}
		s := look(pid, url)
		s.at = time.Since(start)
		if s.scrapeErr != nil {
			fmt.Printf("%8s scrape failed: %v\n", s.at.Round(time.Second), s.scrapeErr)
			continue
		}
		rate := 0.0
		if dt := (s.at - prev.at).Seconds(); dt > 0 && len(samples) > 0 {
			rate = (s.calls - prev.calls) / dt
		}
		fmt.Printf("%8s %12.0f %12.0f %10.0f %10.0f %9.1f %9.1f %5.0f %10.0f %10.1f\n",
			s.at.Round(time.Second), s.calls, s.delivered, s.lost, rate,
			mib(s.rss), mib(s.hwm), s.fds, s.goroutines, s.heapInuse/(1<<20))
		samples = append(samples, s)
		prev = s
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err = <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		return fmt.Errorf("sfwatch did not exit within a minute of SIGTERM; stderr:\n%s", stderr.String())
	}
	fmt.Print(indent(stderr.String()))
	var problems []string
	if err != nil {
		problems = append(problems, fmt.Sprintf("sfwatch: %v", err))
	}
	problems = append(problems, check(samples, stderr.String(), maxHWMMiB)...)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Println("soak: PASS")
	return nil
}

// check looks for growth between the first sample after warm-up and the
// last, and for unaccounted calls in sfwatch's final line.
func check(samples []sample, stderr string, maxHWMMiB int) []string {
	var problems []string
	if len(samples) < 2 {
		return []string{fmt.Sprintf("only %d samples: run longer", len(samples))}
	}
	first, last := samples[len(samples)/2], samples[len(samples)-1] // warm-up: the first half
	if last.calls == 0 {
		problems = append(problems, "no calls counted")
	}
	if last.fds > first.fds {
		problems = append(problems, fmt.Sprintf("descriptors grew from %.0f to %.0f", first.fds, last.fds))
	}
	if last.goroutines > first.goroutines+2 {
		problems = append(problems, fmt.Sprintf("goroutines grew from %.0f to %.0f", first.goroutines, last.goroutines))
	}
	if last.rss > first.rss+8<<20 {
		problems = append(problems, fmt.Sprintf("RSS grew from %.1f to %.1f MiB", mib(first.rss), mib(last.rss)))
	}
	if mib(last.hwm) > float64(maxHWMMiB) {
		problems = append(problems, fmt.Sprintf("peak RSS %.1f MiB > %d MiB", mib(last.hwm), maxHWMMiB))
	}
	if strings.Contains(stderr, "unaccounted for") {
		problems = append(problems, "sfwatch reports calls unaccounted for")
	}
	if !strings.Contains(stderr, "calls counted in the kernel") {
		problems = append(problems, "no final accounting line")
	}
	return problems
}

// look scrapes sfwatch's metrics and reads its peak RSS.
func look(pid int, url string) sample {
	var s sample
	s.hwm = statusBytes(pid, "VmHWM")
	m, err := scrape(url)
	if err != nil {
		s.scrapeErr = err
		return s
	}
	s.calls = m["sfwatch_sendfile_calls_total"]
	s.delivered = m["sfwatch_events_delivered_total"]
	s.lost = m["sfwatch_events_lost_total"]
	s.sampledOut = m["sfwatch_events_sampled_out_total"]
	s.rss = uint64(m["process_resident_memory_bytes"])
	s.fds = m["process_open_fds"]
	s.goroutines = m["go_goroutines"]
	s.heapInuse = m["go_memstats_heap_inuse_bytes"]
	return s
}

// scrape sums the samples of each metric name (labels dropped), from the
// text format; a few lines of parsing keep this script free of
// dependencies.
func scrape(url string) (map[string]float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		fields := strings.Fields(line[strings.LastIndex(line, "}")+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m, sc.Err()
}

func statusBytes(pid int, field string) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString("  " + line)
	}
	return b.String()
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// child calls sendfile in THREADS threads until SIGTERM: 4 KiB from a
// 1 MiB file to /dev/null, alternating NULL and pointer offsets, with one
// failing call (EBADF) per 1000 so that the errno path is exercised too.
func child(threads int) error {
	dir, err := os.MkdirTemp("", "sfwatch-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const size = 1 << 20
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		return err
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	var stop sync.WaitGroup
	var quit = make(chan struct{})
	errs := make(chan error, threads)
	for range threads {
		stop.Go(func() {
			runtime.LockOSThread()
			in, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer syscall.Close(in)
			out, err := syscall.Open(os.DevNull, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer syscall.Close(out)
			off := new(int64)
			var pos int64
			for i := 0; ; i++ {
				if i%4096 == 0 {
					select {
					case <-quit:
						return
					default:
					}
				}
				outFD, offset := out, uintptr(0)
				switch {
				case i%1000 == 999:
					outFD = -1 // EBADF
				case i%2 == 1:
					if *off >= size {
						*off = 0
					}
					offset = uintptr(unsafe.Pointer(off))
				case pos >= size:
					syscall.Seek(in, 0, 0)
					pos = 0
				}
				r, _, e := syscall.Syscall6(syscall.SYS_SENDFILE, uintptr(outFD), uintptr(in), offset, 4096, 0, 0)
				if e == 0 && offset == 0 {
					pos += int64(r)
				}
			}
		})
	}
	select {
	case <-term:
	case err := <-errs:
		close(quit)
		stop.Wait()
		return err
	}
	close(quit)
	stop.Wait()
	return nil
}
