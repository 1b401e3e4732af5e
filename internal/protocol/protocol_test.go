package protocol

import (
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// pair is a connected SOCK_SEQPACKET pair: a daemon's end (Go's poller)
// and a client's (blocking calls), as Dial and the daemon make them.
func pair(t *testing.T) (daemon, client *Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "daemon")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	daemon, client = NewConn(c.(*net.UnixConn)), &Conn{c: &blockingConn{fd: fds[1]}}
	t.Cleanup(func() { daemon.Close(); client.Close() })
	return daemon, client
}

// TestMessagesAndDescriptors: a request with a descriptor and its reply
// cross whole, one packet each; the descriptor received is the one sent.
func TestMessagesAndDescriptors(t *testing.T) {
	daemon, client := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := client.Send(Request{Op: OpRun, Version: Version, RingSize: 1 << 16, SampleEvery: 3}, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	var req Request
	files, err := daemon.Recv(&req)
	if err != nil {
		t.Fatal(err)
	}
	if req != (Request{Op: OpRun, Version: Version, RingSize: 1 << 16, SampleEvery: 3}) || len(files) != 1 {
		t.Fatalf("received %+v with %d descriptors", req, len(files))
	}
	files[0].Write([]byte("x"))
	files[0].Close()
	b := make([]byte, 1)
	if n, _ := r.Read(b); n != 1 || b[0] != 'x' {
		t.Errorf("the descriptor received is not the pipe sent")
	}
	if err := daemon.Send(Reply{Error: "sfwatch daemon: denied: no", Code: CodeDenied}); err != nil {
		t.Fatal(err)
	}
	var rep Reply
	if files, err := client.Recv(&rep); err != nil || len(files) != 0 || rep.Code != CodeDenied {
		t.Fatalf("reply %+v, %d descriptors, %v", rep, len(files), err)
	}
}

// TestGoneAndBad: the other end closed is ErrGone, on either side; a
// packet that is not JSON is an error, not a request.
func TestGoneAndBad(t *testing.T) {
	daemon, client := pair(t)
	if _, _, err := client.c.WriteMsgUnix([]byte("not json"), nil, nil); err != nil {
		t.Fatal(err)
	}
	var req Request
	if _, err := daemon.Recv(&req); err == nil || errors.Is(err, ErrGone) {
		t.Errorf("a bad packet: %v; want a decoding error", err)
	}
	client.Close()
	if _, err := daemon.Recv(&req); !errors.Is(err, ErrGone) {
		t.Errorf("the client gone: %v; want ErrGone", err)
	}
	d2, c2 := pair(t)
	d2.Close()
	var rep Reply
	if _, err := c2.Recv(&rep); !errors.Is(err, ErrGone) {
		t.Errorf("the daemon gone: %v; want ErrGone", err)
	}
}
