// Package client is the side of `sfwatch run` and the Go package that
// talks to the daemon (package protocol): the daemon's programs are
// already attached, so a run costs a connection, a group and a ring buffer
// instead of loading and attaching programs, and needs no privilege.
package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/gate"
	"github.com/sfwatch/sfwatch/internal/protocol"
)

// Socket is the daemon's socket: flag when set, else $SFWATCH_SOCKET, else
// protocol.DefaultSocket.
func Socket(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv(protocol.SocketEnv); s != "" {
		return s
	}
	return protocol.DefaultSocket
}

// ErrNoDaemon is wrapped by Dial's error when no daemon listens on the
// socket (no such file, or a socket nobody accepts on): the caller may
// load its own programs instead.
var ErrNoDaemon = errors.New("no daemon")

// Client is one connection to the daemon: at most one run.
type Client struct {
	socket string
	conn   *protocol.Conn

	mu   sync.Mutex    // one request at a time
	gone chan struct{} // closed when the daemon's end is closed
	stop int           // an eventfd that ends watchGone, which closes it

	watchOnce sync.Once
	watchMu   sync.Mutex
	watchDone bool // watchGone has returned, or never started

	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the daemon at socket.
func Dial(socket string) (*Client, error) {
	conn, err := protocol.Dial(socket)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connecting to the daemon at %s: %w", socket, ErrNoDaemon)
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("connecting to the daemon at %s: permission denied; the operator grants access with 'sfwatch daemon --socket-group GROUP' (see the README's threat model)", socket)
		}
		return nil, fmt.Errorf("connecting to the daemon at %s: %w", socket, err)
	}
	return &Client{socket: socket, conn: conn, gone: make(chan struct{})}, nil
}

// startWatch starts watchGone on descriptors of its own (a duplicate of
// the connection's, and an eventfd that Close writes): it closes them
// itself, so no number it polls is ever another's.
func (c *Client) startWatch() error {
	sock, err := unix.FcntlInt(uintptr(c.conn.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if c.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		unix.Close(sock)
		return err
	}
	go c.watchGone(sock)
	return nil
}

// watchGone closes gone when the daemon's end of the connection closes,
// whatever the client is doing (a request waits on its own), until Close.
func (c *Client) watchGone(sock int) {
	fds := []unix.PollFd{
		{Fd: int32(sock), Events: unix.POLLRDHUP},
		{Fd: int32(c.stop), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err == nil && fds[1].Revents == 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			close(c.gone)
		}
		break
	}
	c.watchMu.Lock()
	c.watchDone = true
	unix.Close(c.stop)
	unix.Close(sock)
	c.watchMu.Unlock()
}

// Hello asks the daemon whether it speaks this protocol version (a run
// asks too: Dial does not, to save a round trip).
func (c *Client) Hello() error {
	var r protocol.Reply
	if _, err := c.request(protocol.Request{Op: protocol.OpHello, Version: protocol.Version}, &r); err != nil {
		return err
	}
	if r.Version != protocol.Version {
		return fmt.Errorf("the daemon at %s speaks protocol version %d, this sfwatch %d: run the same sfwatch on both sides", c.socket, r.Version, protocol.Version)
	}
	return nil
}

// Socket is the socket this client is connected to.
func (c *Client) Socket() string { return c.socket }

// Gate is the path of the gate a run's child starts at (package gate):
// the daemon installs it next to its socket.
func (c *Client) Gate() string { return filepath.Join(filepath.Dir(c.socket), gate.Name) }

// Gone is closed when the daemon's end of the connection is closed: the
// daemon stopped, or was killed. The first call starts watching (a
// thread blocked in poll: a run waits with WaitExit instead).
func (c *Client) Gone() <-chan struct{} {
	c.watchOnce.Do(func() {
		if err := c.startWatch(); err != nil {
			// Out of descriptors: the connection's end is then found
			// by the next request instead.
			c.watchMu.Lock()
			c.watchDone = true
			c.watchMu.Unlock()
		}
	})
	return c.gone
}

// WaitExit waits until the process behind pidfd has exited, or the
// daemon's end of the connection has closed (gone), on one thread.
func (c *Client) WaitExit(pidfd int) (gone bool, err error) {
	fds := []unix.PollFd{
		{Fd: int32(pidfd), Events: unix.POLLIN},
		{Fd: int32(c.conn.FD()), Events: unix.POLLRDHUP},
	}
	for {
		_, err := unix.Poll(fds, -1)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return false, fmt.Errorf("waiting for the command to exit: %w", err)
		case fds[0].Revents != 0:
			return false, nil
		case fds[1].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0:
			return true, nil
		}
	}
}

// GoneError is the error of a run whose daemon went away.
func (c *Client) GoneError() error {
	return fmt.Errorf("the daemon at %s went away mid-run: the command was killed, and its group is removed by the daemon or, if it was killed, by the next one to start", c.socket)
}

// Blame is err, or GoneError when the daemon's end closes within a
// moment: a run's step that failed because the daemon went away (it
// killed the group as it stopped) says so.
func (c *Client) Blame(err error) error {
	if _, refused := errors.AsType[*protocol.Err](err); err == nil || refused {
		return err
	}
	select {
	case <-c.Gone():
		return c.GoneError()
	case <-time.After(goneWait):
		return err
	}
}

// goneWait is how long Blame waits for the connection's end.
const goneWait = 200 * time.Millisecond

// Close ends the connection, and with it the run, if any.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.watchOnce.Do(func() { c.watchDone = true }) // not started: never will
		c.watchMu.Lock()
		if !c.watchDone {
			unix.Write(c.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
		c.watchMu.Unlock()
		c.closeErr = c.conn.Close()
	})
	return c.closeErr
}

// request sends req and waits for its reply into r.
func (c *Client) request(req protocol.Request, r *protocol.Reply, fds ...int) ([]*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.Send(req, fds...); err != nil {
		return nil, c.Blame(fmt.Errorf("asking the daemon at %s: %w", c.socket, err))
	}
	files, err := c.conn.Recv(r)
	if errors.Is(err, protocol.ErrGone) {
		return nil, c.GoneError()
	}
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's reply: %w", err)
	}
	if r.Error != "" {
		for _, f := range files {
			f.Close()
		}
		return nil, &protocol.Err{Code: r.Code, Msg: r.Error}
	}
	return files, nil
}

// Run is a run the daemon accepted.
type Run struct {
	Group    string   // the run's group, below the cgroup2 mount
	GroupID  uint64   // its cgroup id
	Ring     *os.File // the run's ring buffer (a BPF map) to mmap
	RingSize int
}

// Run asks the daemon to watch the held child whose pidfd this is, in a
// new group with a ring buffer of ringSize bytes and one event in
// sampleEvery calls. The child must still be held: the daemon moves it.
func (c *Client) Run(pidfd, ringSize int, sampleEvery uint32) (*Run, error) {
	var r protocol.Reply
	files, err := c.request(protocol.Request{Op: protocol.OpRun, Version: protocol.Version, RingSize: ringSize, SampleEvery: sampleEvery}, &r, pidfd)
	if err != nil {
		return nil, err
	}
	return c.ring(r, files)
}

// Attach asks the daemon (as root) to watch the subtree of the group at
// cgroup (absolute, or below the cgroup2 mount), with a ring buffer of
// ringSize bytes and one event in sampleEvery calls. A *protocol.Err of
// code protocol.CodeOverlap: the daemon counts that group's calls
// elsewhere already.
func (c *Client) Attach(cgroup string, ringSize int, sampleEvery uint32) (*Run, error) {
	var r protocol.Reply
	files, err := c.request(protocol.Request{Op: protocol.OpAttach, Version: protocol.Version, Cgroup: cgroup, RingSize: ringSize, SampleEvery: sampleEvery}, &r)
	if err != nil {
		return nil, err
	}
	return c.ring(r, files)
}

// ring is the run a reply with the ring's descriptor starts.
func (c *Client) ring(r protocol.Reply, files []*os.File) (*Run, error) {
	if len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("the daemon at %s sent %d descriptors for a run, want its ring buffer", c.socket, len(files))
	}
	return &Run{Group: r.Group, GroupID: r.GroupID, Ring: files[0], RingSize: r.RingSize}, nil
}

// Totals reads the run's totals so far.
func (c *Client) Totals() (*protocol.Totals, error) {
	return c.totals(protocol.OpTotals)
}

// Finish kills whatever is left in the run's group (an attach: stops
// watching) and returns the run's final totals: every call of the run is
// in them, and its events are in the ring buffer.
func (c *Client) Finish() (*protocol.Totals, error) {
	return c.totals(protocol.OpFinish)
}

func (c *Client) totals(op string) (*protocol.Totals, error) {
	var r protocol.Reply
	if _, err := c.request(protocol.Request{Op: op}, &r); err != nil {
		return nil, err
	}
	if r.Totals == nil {
		return nil, fmt.Errorf("the daemon at %s sent no totals", c.socket)
	}
	return r.Totals, nil
}

// Kill kills everything in the run's group now (the run is cancelled).
func (c *Client) Kill() error {
	var r protocol.Reply
	_, err := c.request(protocol.Request{Op: protocol.OpKill}, &r)
	return err
}
