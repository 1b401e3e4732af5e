package main

// Helpers of the metrics and attach tests (prefixed pm, production metrics):
// running sfwatch in the background, scraping and parsing its endpoint,
// checking the totals against what a workload counted itself, and the
// certificates, listeners and /proc fields those tests read.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// pmTotals is what a pm-calls workload counted itself.
type pmTotals struct {
	testworkload.Totals
	PID int
}

// pmWriteFile writes v as JSON to path atomically (tmp, then rename).
func pmWriteFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// pmEnv is the environment a workload needs besides ours.
var pmEnv = workloadEnv()

// pmProc is an sfwatch process running in the background.
type pmProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
}

// pmStart starts sfwatch with args, with the workload environment.
func pmStart(t *testing.T, args ...string) *pmProc {
	t.Helper()
	p := &pmProc{cmd: exec.Command(sfwatchBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), pmEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = waitDelay
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pmProc) pid() int { return p.cmd.Process.Pid }

func (p *pmProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits (at most a minute) for sfwatch to exit; it
// checks that nothing was left behind.
func (p *pmProc) stop(t *testing.T, sig os.Signal) result {
	t.Helper()
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("sfwatch did not exit within a minute of %v; stderr:\n%s", sig, p.stderr.String())
	}
	r := result{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.cmd.ProcessState.ExitCode(), pid: p.pid()}
	assertNothingLeft(t, r.pid)
	return r
}

// waitFor polls cond every 20 ms until it holds or timeout passes; it
// fails the test if sfwatch exits or time runs out.
func (p *pmProc) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		if p.exited() {
			t.Fatalf("waiting for %s: sfwatch exited (%v); stderr:\n%s", what, p.cmd.ProcessState, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v; sfwatch stderr:\n%s", what, timeout, p.stderr.String())
		}
	}
}

// pmReady waits for a pm-calls workload's READY file.
func pmReady(t *testing.T, p *pmProc, path string) pmTotals {
	t.Helper()
	var tot pmTotals
	p.waitFor(t, "the workload's "+filepath.Base(path)+" file", slow(time.Minute), func() bool {
		data, err := os.ReadFile(path)
		return err == nil && json.Unmarshal(data, &tot) == nil
	})
	return tot
}

// pmAddr returns a loopback address whose port was free a moment ago.
func pmAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// pmAssertPortFree checks that addr can be bound again: sfwatch's metrics
// server is gone.
func pmAssertPortFree(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("metrics port %s still in use after sfwatch exited: %v", addr, err)
		return
	}
	ln.Close()
}

// pmMetrics is one scrape, by family name.
type pmMetrics map[string]*dto.MetricFamily

// pmScrape GETs url and parses the text format.
func pmScrape(t *testing.T, client *http.Client, url string) pmMetrics {
	t.Helper()
	fams, err := pmTryScrape(client, url)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func pmTryScrape(client *http.Client, url string) (pmMetrics, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s: %s", url, resp.Status, body)
	}
	fams, err := pmParse(body)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape of %s: %w\n%s", url, err, body)
	}
	return fams, nil
}

// pmParse parses a scrape in the text format.
func pmParse(body []byte) (pmMetrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(body))
}

// get returns the value of the series of family name whose labels include
// the given name=value pairs, summed; ok is false when there is none.
func (m pmMetrics) get(name string, labels ...string) (v float64, ok bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.GetMetric() {
		have := make(map[string]string)
		for _, l := range s.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case s.Counter != nil:
			v += s.GetCounter().GetValue()
		case s.Gauge != nil:
			v += s.GetGauge().GetValue()
		case s.Untyped != nil:
			v += s.GetUntyped().GetValue()
		case s.Histogram != nil:
			v += float64(s.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

// value is get for a series that must exist.
func (m pmMetrics) value(t *testing.T, name string, labels ...string) uint64 {
	t.Helper()
	v, ok := m.get(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	if v != math.Trunc(v) || v < 0 {
		t.Fatalf("%s%v = %v, not a count", name, labels, v)
	}
	return uint64(v)
}

// calls is sfwatch_sendfile_calls_total over every result and errno.
func (m pmMetrics) calls(t *testing.T) uint64 {
	return m.value(t, "sfwatch_sendfile_calls_total")
}

// drained is true once every call the kernel counted has been delivered,
// lost or sampled out: the consumer has caught up.
func (m pmMetrics) drained(t *testing.T) bool {
	return m.value(t, "sfwatch_events_delivered_total")+m.value(t, "sfwatch_events_lost_total")+
		m.value(t, "sfwatch_events_sampled_out_total") == m.calls(t)
}

// pmScrapeDrained scrapes until the consumer has caught up.
func pmScrapeDrained(t *testing.T, p *pmProc, client *http.Client, url string) pmMetrics {
	t.Helper()
	var m pmMetrics
	p.waitFor(t, "the consumer to catch up", 30*time.Second, func() bool {
		var err error
		m, err = pmTryScrape(client, url)
		return err == nil && m["sfwatch_sendfile_calls_total"] != nil && m.drained(t)
	})
	return m
}

// checkHistogram: the duration histogram counts every call, its buckets
// are cumulative, and +Inf equals the count.
func checkHistogram(t *testing.T, m pmMetrics, calls uint64) {
	t.Helper()
	f := m["sfwatch_sendfile_duration_seconds"]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
		t.Fatalf("sfwatch_sendfile_duration_seconds: missing or not one histogram: %v", f)
	}
	h := f.GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != calls {
		t.Errorf("histogram _count = %d, want %d (every call)", h.GetSampleCount(), calls)
	}
	if h.GetSampleSum() <= 0 {
		t.Errorf("histogram _sum = %v, want > 0", h.GetSampleSum())
	}
	prev := uint64(0)
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Errorf("bucket le=%g: %d < previous %d: not cumulative", b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
		if le := b.GetUpperBound(); !math.IsInf(le, 1) {
			if exp := math.Log2(le * 1e9); math.Abs(exp-math.Round(exp)) > 1e-9 {
				t.Errorf("bucket le=%g s is not a power of two of nanoseconds", le)
			}
		}
	}
	if prev > calls {
		t.Errorf("largest finite bucket %d > count %d", prev, calls)
	}
}

// checkWorkloadTotals: the kernel's calls, results, bytes and offsets are
// exactly what the workload made and counted itself.
func checkWorkloadTotals(t *testing.T, m pmMetrics, w pmTotals) {
	t.Helper()
	for _, c := range []struct {
		name   string
		labels []string
		want   uint64
	}{
		{"sfwatch_sendfile_calls_total", nil, w.Calls},
		{"sfwatch_sendfile_calls_total", []string{"result", "ok"}, w.Calls},
		{"sfwatch_sendfile_calls_total", []string{"result", "short"}, 0},
		{"sfwatch_sendfile_calls_total", []string{"result", "eof"}, 0},
		{"sfwatch_sendfile_bytes_total", nil, w.Bytes},
		{"sfwatch_sendfile_offset_total", []string{"kind", "null"}, w.Null},
		{"sfwatch_sendfile_offset_total", []string{"kind", "pointer"}, w.Pointer},
	} {
		if got := m.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.labels, got, c.want)
		}
	}
	if v, ok := m.get("sfwatch_sendfile_calls_total", "result", "error"); ok {
		t.Errorf("calls with result=error: %v, want none (asynchronous preemption is off: no ERESTARTSYS)", v)
	}
	checkHistogram(t, m, w.Calls)
	if v, _ := m.get("sfwatch_sendfile_violations_total"); v != 0 {
		t.Errorf("violations = %v, want 0", v)
	}
}

// checkSelfMetrics: build info, child_up and the Go and process
// collectors (what the soak script reads) are there.
func checkSelfMetrics(t *testing.T, m pmMetrics) {
	t.Helper()
	if v := m.value(t, "sfwatch_child_up"); v != 1 {
		t.Errorf("sfwatch_child_up = %d while watching, want 1", v)
	}
	if v := m.value(t, "sfwatch_build_info"); v != 1 {
		t.Errorf("sfwatch_build_info = %d, want 1", v)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := m.get(name); !ok {
			t.Errorf("%s missing", name)
		}
	}
	// Every program's skips are exported, whatever their count.
	for _, prog := range loader.Programs() {
		if _, ok := m.get("sfwatch_programs_skipped_total", "program", prog); !ok {
			t.Errorf("sfwatch_programs_skipped_total{program=%q} missing", prog)
		}
	}
	// No family is registered twice or outside the two namespaces.
	for name := range m {
		if !strings.HasPrefix(name, "sfwatch_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("unexpected family %s", name)
		}
	}
}

// lossNoticeRE matches the loss notice.
var lossNoticeRE = regexp.MustCompile(`(?m)^sfwatch: (\d+) events lost in the last 10s \(ring buffer full; totals stay exact\)$`)

// noticedLosses sums the losses the notices reported so far.
func noticedLosses(stderr string) (sum uint64, notices int) {
	for _, m := range lossNoticeRE.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		sum += n
		notices++
	}
	return sum, notices
}

// pmListeners returns the local addresses ("0100007F:24F8" style, as in
// /proc/net/tcp{,6}) of the TCP sockets that process pid listens on.
func pmListeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := make(map[string]bool)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var addrs []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) >= 10 && f[3] == "0A" && inodes[f[9]] {
				addrs = append(addrs, f[1])
			}
		}
	}
	return addrs
}

// pmCert writes a self-signed certificate for 127.0.0.1 and its key into
// dir and returns the paths and a pool that trusts it.
func pmCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sfwatch test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// fifo makes a named pipe at path.
func fifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pmStatus reads a kB field of /proc/PID/status, in bytes.
func pmStatus(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
