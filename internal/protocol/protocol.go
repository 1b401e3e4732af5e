// Package protocol is what the daemon and its clients say to each other on
// the daemon's unix socket: one JSON message per SOCK_SEQPACKET packet (the
// socket keeps the boundaries), file descriptors passed alongside
// (SCM_RIGHTS). A connection is one client; it asks, the daemon answers,
// one request at a time.
//
// A run: the client starts its command held before exec and sends Run with
// the child's pidfd; the daemon checks who asks (SO_PEERCRED) and what,
// creates the run's group, gives it a counter row and a ring buffer of its
// own, moves the child in and answers with the ring buffer's descriptor.
// The client maps the ring, releases the child, reads its events; Totals
// reads the row while the command runs; Finish kills what is left in the
// group and returns the final row. A connection that ends (the client
// died) ends its run: the group is killed and removed.
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where the daemon listens unless told otherwise
// (--socket, SFWATCH_SOCKET).
const DefaultSocket = "/run/sfwatch/sfwatch.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "SFWATCH_SOCKET"

// Version is bumped when a message changes meaning: a client and a daemon
// of different versions refuse each other in Hello.
const Version = 1

// maxMessage bounds one packet: a row of totals is a few KiB of JSON.
const maxMessage = 64 << 10

// Ops of Request.
const (
	OpHello  = "hello"  // Reply.Version, Reply.Root
	OpRun    = "run"    // with the held child's pidfd; Reply.Group, ring fd
	OpTotals = "totals" // the run's totals so far: Reply.Totals
	OpKill   = "kill"   // kill everything in the run's group now
	OpFinish = "finish" // kill what is left (attach: stop watching), then the final Reply.Totals
	OpAttach = "attach" // root only: watch Request.Cgroup's subtree; Reply.Group, ring fd
)

// Request is one thing a client asks.
type Request struct {
	Op      string `json:"op"`
	Version int    `json:"version,omitempty"` // OpHello
	// OpRun and OpAttach: the ring buffer's size (a power of two) and
	// --sample's N.
	RingSize    int    `json:"ring_size,omitempty"`
	SampleEvery uint32 `json:"sample_every,omitempty"`
	Cgroup      string `json:"cgroup,omitempty"` // OpAttach: absolute, or below the cgroup2 mount
}

// Codes of Reply.Code: why a request was refused.
const (
	CodeDenied   = "denied"   // not allowed for this client
	CodeLimit    = "limit"    // over this user's share
	CodeBad      = "bad"      // malformed, or out of order
	CodeOverlap  = "overlap"  // attach: the group's calls are counted elsewhere already
	CodeInternal = "internal" // the daemon failed
)

// Reply is the daemon's answer to one Request.
type Reply struct {
	Error string `json:"error,omitempty"` // refused or failed: one line
	Code  string `json:"code,omitempty"`

	Version int  `json:"version,omitempty"` // OpHello
	Root    bool `json:"root,omitempty"`    // OpHello: the client may do everything

	Group    string `json:"group,omitempty"` // OpRun: the run's group, below the cgroup2 mount
	GroupID  uint64 `json:"group_id,omitempty"`
	RingSize int    `json:"ring_size,omitempty"`

	Totals *Totals `json:"totals,omitempty"` // OpTotals, OpFinish
}

// Totals are a run's kernel counts: its row (loader.RowSize slots, as the
// daemon's BPF side counts them) and the times the kernel skipped one of
// the daemon's programs while the run was on, by program.
type Totals struct {
	Row     []uint64          `json:"row"`
	Skipped map[string]uint64 `json:"skipped"`
}

// Err is a refused or failed request, as the client sees it.
type Err struct {
	Code, Msg string
}

func (e *Err) Error() string { return e.Msg }

// ErrGone is returned once the other side has closed the connection.
var ErrGone = errors.New("connection closed")

// Conn is one end of a connection.
type Conn struct {
	c packetConn
}

// packetConn is a SOCK_SEQPACKET unix connection: the daemon's
// *net.UnixConn (many clients, on Go's poller), or a client's blockingConn.
type packetConn interface {
	WriteMsgUnix(b, oob []byte, addr *net.UnixAddr) (n, oobn int, err error)
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
	Close() error
}

// Dial connects to the daemon's socket. The connection's calls block
// their thread: a client asks and waits, and a reply wakes it straight
// from the kernel, not through Go's poller and a goroutine switch (a run
// asks twice, and every hop counts in a run of milliseconds).
func Dial(socket string) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dial unixpacket %s: %w", socket, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socket}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dial unixpacket %s: %w", socket, err)
	}
	return &Conn{c: &blockingConn{fd: fd}}, nil
}

// NewConn wraps a SOCK_SEQPACKET unix connection.
func NewConn(c *net.UnixConn) *Conn { return &Conn{c: c} }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// FD is the descriptor of a connection from Dial, -1 for another.
func (c *Conn) FD() int {
	if b, ok := c.c.(*blockingConn); ok {
		return b.fd
	}
	return -1
}

// blockingConn is a client's connection: plain blocking system calls.
type blockingConn struct {
	fd   int
	once sync.Once
}

func (b *blockingConn) WriteMsgUnix(p, oob []byte, _ *net.UnixAddr) (int, int, error) {
	for {
		n, err := unix.SendmsgN(b.fd, p, oob, nil, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			return n, len(oob), err
		}
	}
}

func (b *blockingConn) ReadMsgUnix(p, oob []byte) (int, int, int, *net.UnixAddr, error) {
	for {
		n, oobn, flags, _, err := unix.Recvmsg(b.fd, p, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			if err == nil && n == 0 && oobn == 0 {
				err = io.EOF
			}
			return n, oobn, flags, nil, err
		}
	}
}

// Close wakes a call blocked on the connection (shutdown), then closes it.
func (b *blockingConn) Close() error {
	var err error
	b.once.Do(func() {
		unix.Shutdown(b.fd, unix.SHUT_RDWR)
		err = unix.Close(b.fd)
	})
	return err
}

// Send sends v as one packet, with fds (nil: none).
func (c *Conn) Send(v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding message: %w", err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("sending message: %w", err)
	}
	return nil
}

// Recv reads one packet into v and returns the descriptors that came with
// it (as files: the caller closes them). ErrGone at the end.
func (c *Conn) Recv(v any) ([]*os.File, error) {
	b := make([]byte, maxMessage)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(b, oob)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("receiving message: %w", err)
	}
	files, ferr := parseRights(oob[:oobn])
	if n == 0 && oobn == 0 {
		return nil, ErrGone
	}
	if flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 {
		closeAll(files)
		return nil, errors.New("receiving message: too long")
	}
	if ferr != nil {
		return nil, ferr
	}
	if err := json.Unmarshal(b[:n], v); err != nil {
		closeAll(files)
		return nil, fmt.Errorf("decoding message: %w", err)
	}
	return files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("receiving descriptors: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
