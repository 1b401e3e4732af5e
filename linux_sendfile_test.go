package sfwatch_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/sfwatch/sfwatch"
	"github.com/sfwatch/sfwatch/internal/testenv"
)

// TestLinuxSendfile is Go's net/http TestLinuxSendfile without strace and
// without a regexp: the parent re-executes this test binary as a file
// server under sfwatch, fetches a file from it, and asserts on the calls the
// kernel saw.
func TestLinuxSendfile(t *testing.T) {
	if err := sfwatch.Supported(); err != nil {
		testenv.SkipOrFail(t, "privileged test cannot run: %v", err)
	}
	child, page, fetched := startFileServer(t)
	begin := time.Now()
	res, err := sfwatch.Run(context.Background(), child, nil)
	end := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-fetched; err != nil {
		t.Fatalf("fetching from the child: %v", err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("child exited %d", res.ExitCode)
	}

	s := res.Summary
	// net/http writes the first 512 bytes itself (response.ReadFrom
	// copies sniffLen bytes before switching to sendfile), the rest with
	// sendfile.
	if want := uint64(len(page) - 512); s.Calls == 0 || s.Bytes != want {
		t.Fatalf("want the page less its first 512 bytes sent with sendfile: %d calls carried %d bytes, want %d", s.Calls, s.Bytes, want)
	}
	if s.OffsetPtr != 0 || s.Errors != 0 {
		t.Errorf("want every call with a NULL offset and none failing; got %d with a pointer, %d errors", s.OffsetPtr, s.Errors)
	}
	for _, e := range res.Events {
		if e.Offset != nil || e.Ret < 0 || len(e.Violations) > 0 {
			t.Errorf("unexpected call: %+v", e)
		}
		if e.Start.Before(begin) || e.Start.After(end) {
			t.Errorf("call at %v, outside the run [%v, %v]", e.Start, begin, end)
		}
	}
}

// startFileServer makes the file server child (this test binary) and
// starts fetching the page from it, then asking it to quit, as Go's test
// did; fetched says how that went.
func startFileServer(t *testing.T) (child *exec.Cmd, page []byte, fetched <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	dir := t.TempDir()
	page = bytes.Repeat([]byte("<p>served with sendfile</p>\n"), 4096)
	if err := os.WriteFile(filepath.Join(dir, "index.html"), page, 0o644); err != nil {
		t.Fatal(err)
	}

	child = exec.Command(os.Args[0], "-test.run=^TestLinuxSendfileChild$")
	child.ExtraFiles = append(child.ExtraFiles, lnf)
	child.Env = append([]string{"GO_WANT_HELPER_PROCESS=1", "SFWATCH_TEST_ROOT=" + dir}, os.Environ()...)
	child.Stdout, child.Stderr = os.Stdout, os.Stderr

	done := make(chan error, 1)
	go func() {
		// The child serves on the inherited listener; fetch, then ask it
		// to quit, as the original test did.
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(fmt.Sprintf("http://%s/", ln.Addr()))
		if err == nil {
			var got []byte
			got, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && !bytes.Equal(got, page) {
				err = fmt.Errorf("got %d bytes, want the %d-byte page", len(got), len(page))
			}
		}
		client.Get(fmt.Sprintf("http://%s/quit", ln.Addr()))
		done <- err
	}()
	return child, page, done
}

// TestLinuxSendfileStrace is the seed's own shape, for comparison (make
// bench-clients): the same child under strace -f, its output matched
// with Go's regexp.
func TestLinuxSendfileStrace(t *testing.T) {
	strace := testenv.NeedTool(t, "strace")
	child, _, fetched := startFileServer(t)
	out := filepath.Join(t.TempDir(), "strace.out")
	child.Args = append([]string{strace, "-f", "-q", "-o", out, "-e", "trace=sendfile", "--"}, child.Args...)
	child.Path = strace
	if err := child.Run(); err != nil {
		t.Fatal(err)
	}
	if err := <-fetched; err != nil {
		t.Fatalf("fetching from the child: %v", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`sendfile(64)?\(\d+,\s*\d+,\s*NULL,\s*\d+`)
	if !re.Match(data) {
		t.Errorf("no sendfile call with a NULL offset in strace's output:\n%s", data)
	}
}

// TestLinuxSendfileChild is the server, run only as the child above.
func TestLinuxSendfileChild(t *testing.T) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") != "1" {
		return
	}
	defer os.Exit(0)
	fd3 := os.NewFile(3, "ephemeral-port-listener")
	ln, err := net.FileListener(fd3)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(os.Getenv("SFWATCH_TEST_ROOT"))))
	mux.HandleFunc("/quit", func(w http.ResponseWriter, _ *http.Request) {
		// Answer first: a connection closed without a response makes the
		// client retry on a new connection that nobody would accept.
		w.(http.Flusher).Flush()
		os.Exit(0)
	})
	s := &http.Server{Handler: mux}
	if err := s.Serve(ln); err != nil {
		panic(err)
	}
}
