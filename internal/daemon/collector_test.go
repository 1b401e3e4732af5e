package daemon

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

func TestKubeLabels(t *testing.T) {
	const uid = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	uidSystemd := strings.ReplaceAll(uid, "-", "_")
	const id = "4c3ad5bb8a2f2e0b8c8e4cf4a1ef3f2d9c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e"
	for _, tc := range []struct{ path, pod, container string }{
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSystemd + ".slice/cri-containerd-" + id + ".scope", uid, id},
		{"/kubepods.slice/kubepods-pod" + uidSystemd + ".slice/docker-" + id + ".scope", uid, id},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSystemd + ".slice/crio-" + id + ".scope", uid, id},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSystemd + ".slice/crio-conmon-" + id + ".scope", uid, ""},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSystemd + ".slice", uid, ""},
		{"/kubepods/burstable/pod" + uid + "/" + id, uid, id},
		{"/kubepods/pod" + uid + "/" + id, uid, id},
		{"/kubepods/besteffort/pod" + uid, uid, ""},
		{"/system.slice/nginx.service", "", ""},
		{"/kubepods.slice/kubepods-burstable.slice", "", ""},
		{"/podnotauid/" + id, "", ""},
		{"/", "", ""},
	} {
		pod, container := kubeLabels(tc.path)
		if pod != tc.pod || container != tc.container {
			t.Errorf("kubeLabels(%s) = %q, %q; want %q, %q", tc.path, pod, container, tc.pod, tc.container)
		}
	}
}

// scrape serves one scrape of d's handler and parses it.
func scrape(t *testing.T, d *Daemon) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(d, NewRegistry(d, "test"), 1, time.Minute).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// series finds the value of the metric name whose labels include want.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0, false
	}
metrics:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue metrics
			}
		}
		return value(m), true
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestMetricsKubeletPaths: groups in both kubelet layouts, created by the
// test, get their pod_uid and container_id, and their calls by errno.
func TestMetricsKubeletPaths(t *testing.T) {
	testenv.RequirePrivileged(t)
	const uid = "6b1a7f0e-2c3d-4e5f-8a9b-1c2d3e4f5a6b"
	const cid = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
	p := parent(t)
	// The kubelet's top groups exist before the daemon starts, as on a
	// node; the pods' groups are created after it, below them.
	mkdir(t, p, "kubepods.slice")
	mkdir(t, p, "kubepods")
	d := start(t, Config{Watch: []string{p.Rel + "/kubepods.slice", p.Rel + "/kubepods"}})
	systemd := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + cid + ".scope"
	cgroupfs := "kubepods/burstable/pod" + uid + "/" + cid
	runIn(t, mkdir(t, p, systemd), "ok=2,ebadf=1")
	runIn(t, mkdir(t, p, cgroupfs), "ok=1,einval=2")

	reg := scrape(t, d)
	for _, tc := range []struct {
		path     string
		ok, errs float64
		errno    string
		bytes    float64
	}{
		{p.Rel + "/" + systemd, 2, 1, "EBADF", 8192},
		{p.Rel + "/" + cgroupfs, 1, 2, "EINVAL", 4096},
	} {
		labels := map[string]string{"cgroup": tc.path, "pod_uid": uid, "container_id": cid}
		with := func(kv ...string) map[string]string {
			m := map[string]string{}
			for k, v := range labels {
				m[k] = v
			}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			return m
		}
		if v, ok := series(t, reg, "sfwatch_sendfile_calls_total", with("result", "ok")); !ok || v != tc.ok {
			t.Errorf("%s: ok calls %v (found %v), want %v", tc.path, v, ok, tc.ok)
		}
		if v, ok := series(t, reg, "sfwatch_sendfile_calls_total", with("result", "error", "errno", tc.errno)); !ok || v != tc.errs {
			t.Errorf("%s: %s calls %v (found %v), want %v", tc.path, tc.errno, v, ok, tc.errs)
		}
		if v, ok := series(t, reg, "sfwatch_sendfile_bytes_total", labels); !ok || v != tc.bytes {
			t.Errorf("%s: bytes %v (found %v), want %v", tc.path, v, ok, tc.bytes)
		}
		if v, ok := series(t, reg, "sfwatch_sendfile_duration_seconds", labels); !ok || v != tc.ok+tc.errs {
			t.Errorf("%s: histogram count %v (found %v), want %v", tc.path, v, ok, tc.ok+tc.errs)
		}
	}
	if v, _ := series(t, reg, "sfwatch_watched_groups", nil); v != 2 {
		t.Errorf("sfwatch_watched_groups %v, want 2", v)
	}
}
