// Package server is the daemon's socket: it serves the clients of package
// protocol, and it is a privilege boundary. It checks who asks
// (SO_PEERCRED) and what (checkChild): a client that is not root may only
// have its own child watched, held before the exec of its command, in a
// group the daemon creates and the client cannot write; it gets that run's
// ring buffer and totals and nothing else; its runs and ring buffers are
// bounded per uid. The threat model is in the README.
package server

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/cgroup"
	"github.com/sfwatch/sfwatch/internal/daemon"
	"github.com/sfwatch/sfwatch/internal/gate"
	"github.com/sfwatch/sfwatch/internal/loader"
	"github.com/sfwatch/sfwatch/internal/protocol"
)

// Defaults of Config.
const (
	DefaultSocketMode      = 0o660
	DefaultSocketGroup     = "sfwatch"
	DefaultMaxRunsPerUser  = 16
	DefaultMaxRingsPerUser = 256 << 20
)

// RunsParent is the cgroup below which every daemon keeps its runs' groups,
// each daemon in a group named after its socket.
const RunsParent = "/sfwatch.runs"

// Config is the socket and its limits.
type Config struct {
	Socket      string
	SocketMode  os.FileMode
	SocketGroup string // "": root's group
	// Per uid, for every client but root: runs at once, and the bytes of
	// their ring buffers (kernel memory) together.
	MaxRunsPerUser  int
	MaxRingsPerUser int
	// ParkedFor is how long an ended run's lane waits for the same uid's
	// next run before it is freed; 0: DefaultParkedFor.
	ParkedFor time.Duration
	Log       io.Writer
}

// Server serves the daemon's clients.
type Server struct {
	d    *daemon.Daemon
	cfg  Config
	ln   *net.UnixListener
	runs *cgroup.Group // the parent of the runs' groups
	gate string        // the gate's path (package gate)

	mu    sync.Mutex
	users map[uint32]*usage
	conns map[*conn]struct{}
	seq   atomic.Uint64
	wg    sync.WaitGroup
	done  chan struct{}

	closeOnce sync.Once
	closeErr  error

	// spares are empty groups made ahead: a mkdir costs a quarter of a
	// millisecond that a run would otherwise wait for. cgroup2 renames
	// nothing, so a run's group is named run-N whoever takes it; the
	// daemon's log and the client have the name.
	spares chan *cgroup.Group
}

// spareGroups is how many empty groups wait for runs.
const spareGroups = 4

// usage is what one uid holds: ringBytes counts its runs' rings and its
// parked ones (kernel memory held for it).
type usage struct {
	runs, conns, ringBytes int
	parked                 []parkedLane // oldest first
}

// parkedLane is a lane of an ended run, kept for the uid's next run.
type parkedLane struct {
	lane  *daemon.Lane
	since time.Time
}

// Lanes parked per uid, and how long: a user's runs one after another
// (a test suite) skip the grace period of a new lane; one that stopped
// gives the rows and memory back.
const (
	maxParkedPerUser = 4
	DefaultParkedFor = 30 * time.Second
)

// RunsGroup is the group below which the daemon listening on socket keeps
// its runs: one per socket, so that a daemon at start removes what the
// last one on its socket left (it was killed), and nothing of another's.
func RunsGroup(socket string) string {
	abs, err := filepath.Abs(socket)
	if err != nil {
		abs = socket
	}
	sum := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("%s/%x", RunsParent, sum[:6])
}

// Listen opens the socket, removes the runs a killed daemon left on it,
// and serves clients until Close.
func Listen(d *daemon.Daemon, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.ParkedFor == 0 {
		cfg.ParkedFor = DefaultParkedFor
	}
	// The socket first: another daemon that listens on it owns the runs'
	// group too, which is not to be swept.
	ln, err := listen(cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(cfg.Socket)
		return nil, err
	}
	runs, err := cgroup.Ensure(RunsGroup(cfg.Socket))
	if err != nil {
		return fail(err)
	}
	n, err := runs.Sweep()
	if n > 0 {
		fmt.Fprintf(cfg.Log, "sfwatch: removed %d run groups a daemon that was killed left in %s\n", n, runs.Path)
	}
	if err != nil {
		fmt.Fprintf(cfg.Log, "sfwatch: %v; the next daemon on this socket tries again\n", err)
	}
	if err := d.WatchRuns(runs); err != nil {
		removeRuns(runs)
		return fail(err)
	}
	gatePath, err := gate.Install(filepath.Dir(cfg.Socket))
	if err != nil {
		removeRuns(runs)
		return fail(err)
	}
	s := &Server{d: d, cfg: cfg, ln: ln, runs: runs, gate: gatePath, users: make(map[uint32]*usage), conns: make(map[*conn]struct{}), done: make(chan struct{})}
	s.spares = make(chan *cgroup.Group, spareGroups)
	s.wg.Go(s.accept)
	s.wg.Go(s.janitor)
	s.wg.Go(s.makeSpares)
	return s, nil
}

// listen creates the socket with its mode and group. A socket file that no
// one accepts on (a killed daemon's) is replaced; a live one is another
// daemon's.
func listen(cfg Config) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("creating the socket's directory: %w", err)
	}
	if c, err := net.Dial("unixpacket", cfg.Socket); err == nil {
		c.Close()
		return nil, fmt.Errorf("another daemon listens on %s", cfg.Socket)
	}
	if err := os.Remove(cfg.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale socket %s: %w", cfg.Socket, err)
	}
	gid := 0
	if cfg.SocketGroup != "" {
		g, err := user.LookupGroup(cfg.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("--socket-group %s: %w; create it (groupadd --system %s) or name another", cfg.SocketGroup, err, cfg.SocketGroup)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("--socket-group %s: gid %q: not a number", cfg.SocketGroup, g.Gid)
		}
	}
	// Made in a directory of root's alone, given its mode and group, then
	// renamed into place: nobody connects before they are the operator's
	// (no umask, which is the whole process's, is changed).
	tmp, err := os.MkdirTemp(filepath.Dir(cfg.Socket), ".sfwatch-socket-")
	if err != nil {
		return nil, fmt.Errorf("creating the socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	made := filepath.Join(tmp, "sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: made, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Socket, err)
	}
	ln.SetUnlinkOnClose(false) // renamed: Close removes it (Server.close)
	err = os.Chown(made, 0, gid)
	if err == nil {
		err = os.Chmod(made, cfg.SocketMode)
	}
	if err == nil {
		err = os.Rename(made, cfg.Socket)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting up the socket %s: %w", cfg.Socket, err)
	}
	return ln, nil
}

func (s *Server) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			fmt.Fprintf(s.cfg.Log, "sfwatch: accepting a client: %v\n", err)
			time.Sleep(100 * time.Millisecond) // out of descriptors, say: do not spin
			continue
		}
		s.wg.Go(func() { s.serve(c) })
	}
}

// makeSpares keeps spareGroups empty groups ready.
func (s *Server) makeSpares() {
	for {
		g, err := s.runs.Create(s.groupName())
		if err != nil {
			fmt.Fprintf(s.cfg.Log, "sfwatch: making a group ahead: %v\n", err)
			select {
			case <-s.done:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case s.spares <- g:
		case <-s.done:
			g.Close()
			return
		}
	}
}

// groupName is the name of a new run group.
func (s *Server) groupName() string {
	return fmt.Sprintf("run-%d", s.seq.Add(1))
}

// newGroup is a new empty group for a run.
func (s *Server) newGroup() (*cgroup.Group, error) {
	select {
	case g := <-s.spares:
		return g, nil
	default:
		return s.runs.Create(s.groupName())
	}
}

// Close stops accepting, kills and removes every run's group, and ends
// every connection (the clients then say the daemon went away).
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	close(s.done)
	err := s.ln.Close()
	os.Remove(s.cfg.Socket)
	s.mu.Lock()
	var conns []*conn
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.end()
		c.conn.Close()
	}
	s.wg.Wait()
	s.free(s.unpark(time.Time{}))
	for len(s.spares) > 0 {
		g := <-s.spares
		g.Close()
	}
	return errors.Join(err, removeRuns(s.runs))
}

// removeRuns closes the runs' group and removes it: empty now, unless a
// run's group could not be removed (the next daemon on this socket sweeps
// it). Its parent stays while another daemon's runs are in it.
func removeRuns(runs *cgroup.Group) error {
	err := runs.Close()
	if rerr := os.Remove(runs.Path); rerr == nil {
		os.Remove(filepath.Dir(runs.Path))
	}
	return err
}

// Runs is the number of runs going on, and Conns the open connections.
func (s *Server) Runs() (runs, conns int) {
	// s.mu before c.mu nowhere: a request holds c.mu and takes s.mu.
	s.mu.Lock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		if c.run != nil {
			runs++
		}
		c.mu.Unlock()
	}
	return runs, len(all)
}

// conn is one client.
type conn struct {
	s    *Server
	conn *protocol.Conn
	peer peer

	// mu is held while a request is handled and while the run ends:
	// Close never ends a run under a request that reads it.
	mu  sync.Mutex
	run *run
}

// run is the one run (or attach) of a connection.
type run struct {
	attach   bool // an existing group, root's to watch: nothing killed or removed
	group    *cgroup.Group
	lane     *daemon.Lane
	daemon   *daemon.Run // nil until the lane counts the group
	ringSize int
	row      []uint64
}

func peerOf(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if cerr != nil {
		return peer{}, cerr
	}
	return peer{pid: int(cred.Pid), uid: cred.Uid, gid: cred.Gid}, nil
}

func (s *Server) serve(uc *net.UnixConn) {
	p, err := peerOf(uc)
	if err != nil {
		fmt.Fprintf(s.cfg.Log, "sfwatch: reading a client's credentials: %v\n", err)
		uc.Close()
		return
	}
	c := &conn{s: s, conn: protocol.NewConn(uc), peer: p}
	if err := s.admit(c); err != nil {
		c.conn.Send(refusal(err))
		uc.Close()
		return
	}
	defer func() {
		c.end()
		c.conn.Close()
		s.leave(c)
	}()
	for {
		var req protocol.Request
		files, err := c.conn.Recv(&req)
		if err != nil {
			return // gone, or not speaking the protocol: the run ends
		}
		rep, fds := c.handle(&req, files)
		for _, f := range files {
			f.Close()
		}
		err = c.conn.Send(rep, fds...)
		for _, fd := range fds {
			syscall.Close(fd)
		}
		if err != nil {
			return
		}
		if req.Op == protocol.OpFinish && rep.Error == "" {
			// After the reply: the client need not wait for the group's
			// removal.
			c.end()
		}
	}
}

// maxConnsPerRun bounds a uid's connections to this many per run it may
// have: a connection costs the daemon a descriptor and a goroutine.
const maxConnsPerRun = 2

// admit counts a new connection against its uid.
func (s *Server) admit(c *conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return errors.New("the daemon is stopping")
	default:
	}
	u := s.user(c.peer.uid)
	if !c.peer.root() && u.conns >= maxConnsPerRun*s.cfg.MaxRunsPerUser {
		return fmt.Errorf("%w: uid %d has %d connections open, the most allowed", errLimit, c.peer.uid, u.conns)
	}
	u.conns++
	s.conns[c] = struct{}{}
	return nil
}

func (s *Server) leave(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	u := s.user(c.peer.uid)
	u.conns--
	s.forget(c.peer.uid, u)
}

func (s *Server) user(uid uint32) *usage {
	u := s.users[uid]
	if u == nil {
		u = &usage{}
		s.users[uid] = u
	}
	return u
}

func (s *Server) forget(uid uint32, u *usage) {
	if u.runs == 0 && u.conns == 0 && u.ringBytes == 0 && len(u.parked) == 0 {
		delete(s.users, uid)
	}
}

var errLimit = errors.New("limit")

func refusal(err error) protocol.Reply {
	code := protocol.CodeInternal
	switch {
	case errors.Is(err, errDenied):
		code = protocol.CodeDenied
	case errors.Is(err, errLimit):
		code = protocol.CodeLimit
	case errors.Is(err, errBad):
		code = protocol.CodeBad
	case errors.Is(err, daemon.ErrOverlap):
		code = protocol.CodeOverlap
	}
	return protocol.Reply{Error: "sfwatch daemon: " + err.Error(), Code: code}
}

var errBad = errors.New("bad request")

// handle answers one request; fds go with the reply (the caller closes
// them after sending).
func (c *conn) handle(req *protocol.Request, files []*os.File) (protocol.Reply, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch req.Op {
	case protocol.OpHello:
		return protocol.Reply{Version: protocol.Version, Root: c.peer.root()}, nil
	case protocol.OpRun:
		if len(files) != 1 {
			return refusal(fmt.Errorf("%w: run wants the child's pidfd, got %d descriptors", errBad, len(files))), nil
		}
		r, err := c.begin(req, int(files[0].Fd()))
		if err != nil {
			return refusal(err), nil
		}
		return r.reply()
	case protocol.OpAttach:
		r, err := c.attach(req)
		if err != nil {
			return refusal(err), nil
		}
		return r.reply()
	case protocol.OpTotals, protocol.OpFinish, protocol.OpKill:
		r := c.run
		if r == nil {
			return refusal(fmt.Errorf("%w: %s before run", errBad, req.Op)), nil
		}
		switch {
		case req.Op == protocol.OpKill && r.attach:
			return refusal(fmt.Errorf("%w: an attach kills nothing", errBad)), nil
		case req.Op == protocol.OpKill:
			if err := r.group.Kill(); err != nil {
				return refusal(err), nil
			}
			return protocol.Reply{}, nil
		case req.Op == protocol.OpFinish && r.attach:
			if err := r.daemon.Stop(); err != nil {
				return refusal(err), nil
			}
		case req.Op == protocol.OpFinish:
			if err := r.group.Kill(); err != nil {
				return refusal(err), nil
			}
		}
		t, err := r.totals()
		if err != nil {
			return refusal(err), nil
		}
		return protocol.Reply{Totals: t}, nil
	}
	return refusal(fmt.Errorf("%w: unknown op %q", errBad, req.Op)), nil
}

// reply is the answer to run or attach: the group, and the ring's
// descriptor for the client to map.
func (r *run) reply() (protocol.Reply, []int) {
	fd, err := unix.FcntlInt(uintptr(r.lane.Ring().FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return refusal(fmt.Errorf("passing the ring buffer: %w", err)), nil
	}
	return protocol.Reply{Group: r.group.Rel, GroupID: r.group.ID, RingSize: r.ringSize}, []int{fd}
}

func (r *run) totals() (*protocol.Totals, error) {
	var err error
	if r.row, err = r.daemon.Row(r.row); err != nil {
		return nil, err
	}
	skipped, err := r.daemon.Skipped()
	if err != nil {
		return nil, err
	}
	return &protocol.Totals{Row: r.row, Skipped: skipped}, nil
}

// begin checks and starts the connection's run: the group, its row and
// ring buffer, then the child moved in.
func (c *conn) begin(req *protocol.Request, pidfd int) (*run, error) {
	s := c.s
	if err := c.checkRequest(req); err != nil {
		return nil, err
	}
	pid, err := pidOfPidfd(pidfd)
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		return nil, fmt.Errorf("%w: the child has exited", errBad)
	}
	if err := checkChild(c.peer, pid, s.gate); err != nil {
		return nil, err
	}
	reuse, err := s.reserve(c.peer, req.RingSize)
	if err != nil {
		return nil, err
	}
	r, err := c.start(req, pid, pidfd, reuse)
	if err != nil {
		s.end(c.peer, r)
		return nil, err
	}
	c.run = r
	return r, nil
}

// checkRequest checks what run and attach share.
func (c *conn) checkRequest(req *protocol.Request) error {
	if c.run != nil {
		return fmt.Errorf("%w: one run per connection", errBad)
	}
	if req.Version != protocol.Version {
		return fmt.Errorf("%w: this daemon speaks protocol version %d, the client %d: run the same sfwatch on both sides", errBad, protocol.Version, req.Version)
	}
	if err := loader.ValidateRingBufSize(req.RingSize); err != nil {
		return fmt.Errorf("%w: %v", errBad, err)
	}
	if req.SampleEvery == 0 || req.SampleEvery > 1<<31 {
		return fmt.Errorf("%w: sample every %d calls: want 1 to 2^31", errBad, req.SampleEvery)
	}
	return nil
}

// attach starts the connection's attach: root's client's only, to a
// group no other watch counts.
func (c *conn) attach(req *protocol.Request) (*run, error) {
	s := c.s
	if !c.peer.root() {
		return nil, fmt.Errorf("%w: attach is root's: a client that is not root may only run a command of its own (sfwatch run)", errDenied)
	}
	if err := c.checkRequest(req); err != nil {
		return nil, err
	}
	group, err := cgroup.Open(req.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBad, err)
	}
	reuse, err := s.reserve(c.peer, req.RingSize)
	if err != nil {
		group.Close()
		return nil, err
	}
	r := &run{attach: true, group: group, lane: reuse, ringSize: req.RingSize}
	if r.lane == nil {
		r.lane, err = s.newLane(req.RingSize)
	}
	if err == nil {
		r.daemon, err = s.d.BeginAttach(group, r.lane, req.SampleEvery)
	}
	if err != nil {
		s.end(c.peer, r)
		return nil, err
	}
	c.run = r
	return r, nil
}

// newLane is a new lane for a ring of size bytes; parked lanes give their
// rows back when none is free.
func (s *Server) newLane(size int) (*daemon.Lane, error) {
	lane, err := s.d.NewLane(size)
	if errors.Is(err, loader.ErrNoFreeRow) {
		s.free(s.unpark(time.Time{}))
		lane, err = s.d.NewLane(size)
	}
	if errors.Is(err, loader.ErrNoFreeRow) {
		err = fmt.Errorf("%w: every row is taken (the daemon's --max-groups)", errLimit)
	}
	return lane, err
}

// start creates the run's group and lane (reuse, or a new one), and moves
// pid in. On error, r holds what it made, for close.
func (c *conn) start(req *protocol.Request, pid, pidfd int, reuse *daemon.Lane) (r *run, err error) {
	s := c.s
	r = &run{ringSize: req.RingSize, lane: reuse}
	if r.group, err = s.newGroup(); err != nil {
		return r, err
	}
	if r.lane == nil {
		if r.lane, err = s.newLane(req.RingSize); err != nil {
			return r, err
		}
	}
	if r.daemon, err = s.d.BeginRun(r.group, r.lane, req.SampleEvery); err != nil {
		return r, err
	}
	if err := r.group.Adopt(pid); err != nil {
		return r, err
	}
	// The pidfd still names pid: it was not reaped and reused while it
	// was checked and moved, so what moved is the client's child.
	if now, err := pidOfPidfd(pidfd); err != nil || now != pid {
		return r, fmt.Errorf("%w: the child exited while it was moved", errBad)
	}
	return r, nil
}

// end kills and removes the connection's run, if any, and parks its lane
// or frees it.
func (c *conn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked()
}

func (c *conn) endLocked() {
	r := c.run
	c.run = nil
	if r == nil {
		return
	}
	c.s.end(c.peer, r)
}

// end closes r (a run, or one that could not start) and gives p's share
// back: its lane parked, or freed when closing failed (the lane is then
// in a state unknown).
func (s *Server) end(p peer, r *run) {
	lane, err := r.close(s)
	if err != nil {
		fmt.Fprintf(s.cfg.Log, "sfwatch: ending a run of uid %d: %v\n", p.uid, err)
		lane = nil
		s.free([]*daemon.Lane{r.lane})
	}
	s.release(p, r.ringSize, lane)
}

// close kills the group's processes, stops counting it (nothing of the
// group can be counted any more), and removes it. It returns the lane to
// park, nil when there is none.
func (r *run) close(s *Server) (*daemon.Lane, error) {
	var errs []error
	if r.group != nil && !r.attach {
		errs = append(errs, r.group.Kill())
	}
	if r.daemon != nil {
		_, err := r.daemon.End()
		errs = append(errs, err)
	}
	if r.group != nil {
		// An attach's group is only closed: it is not ours.
		if err := r.group.Close(); errors.Is(err, syscall.EBUSY) {
			// Its last process is a zombie: the client reaps it as it
			// reads the final totals.
			s.removeLater(r.group)
		} else {
			errs = append(errs, err)
		}
	}
	return r.lane, errors.Join(errs...)
}

// removeLater removes a run's empty group once it can be (its processes
// reaped), trying for a minute.
func (s *Server) removeLater(g *cgroup.Group) {
	s.wg.Go(func() {
		start := time.Now()
		for delay := 5 * time.Millisecond; ; delay = min(2*delay, time.Second) {
			select {
			case <-s.done:
				g.Remove() // the last try; else the next daemon's sweep
				return
			case <-time.After(delay):
			}
			err := g.Remove()
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			if time.Since(start) > time.Minute {
				fmt.Fprintf(s.cfg.Log, "sfwatch: %v; the next daemon on this socket removes it\n", err)
				return
			}
		}
	})
}

// reserve counts a run with a ring of ringBytes against p's share, and
// returns the lane parked for it, if any.
func (s *Server) reserve(p peer, ringBytes int) (*daemon.Lane, error) {
	s.mu.Lock()
	u := s.user(p.uid)
	var reuse *daemon.Lane
	for i, pl := range u.parked {
		if pl.lane.Size() == ringBytes {
			reuse = pl.lane
			u.parked = append(u.parked[:i], u.parked[i+1:]...)
			break
		}
	}
	// Older parked lanes make room for a new one.
	var evicted []*daemon.Lane
	need := u.ringBytes + ringBytes
	if reuse != nil {
		need -= ringBytes
	}
	for len(u.parked) > 0 && !p.root() && need > s.cfg.MaxRingsPerUser {
		evicted = append(evicted, u.parked[0].lane)
		need -= u.parked[0].lane.Size()
		u.ringBytes -= u.parked[0].lane.Size()
		u.parked = u.parked[1:]
	}
	var err error
	switch {
	case p.root():
	case u.runs >= s.cfg.MaxRunsPerUser:
		err = fmt.Errorf("%w: uid %d has %d runs going, the most allowed (the daemon's --max-runs-per-user)", errLimit, p.uid, u.runs)
	case need > s.cfg.MaxRingsPerUser:
		err = fmt.Errorf("%w: uid %d's runs would hold %d bytes of ring buffers, more than the %d allowed (the daemon's --max-ring-per-user); use a smaller --ringbuf-size", errLimit, p.uid, need, s.cfg.MaxRingsPerUser)
	}
	if err != nil && reuse != nil {
		u.parked = append(u.parked, parkedLane{reuse, time.Now()})
		reuse = nil
	}
	if err == nil {
		u.runs++
		if reuse == nil {
			u.ringBytes += ringBytes
		}
	}
	s.mu.Unlock()
	s.free(evicted)
	return reuse, err
}

// release ends a run's share; its lane, if any, is parked for p's next
// run, or freed.
func (s *Server) release(p peer, ringBytes int, lane *daemon.Lane) {
	s.mu.Lock()
	u := s.user(p.uid)
	u.runs--
	var evicted []*daemon.Lane
	stopping := false
	select {
	case <-s.done:
		stopping = true
	default:
	}
	switch {
	case lane == nil:
		u.ringBytes -= ringBytes
	case stopping:
		evicted = append(evicted, lane)
		u.ringBytes -= ringBytes
	default:
		u.parked = append(u.parked, parkedLane{lane, time.Now()})
		if len(u.parked) > maxParkedPerUser {
			evicted = append(evicted, u.parked[0].lane)
			u.ringBytes -= u.parked[0].lane.Size()
			u.parked = u.parked[1:]
		}
	}
	s.forget(p.uid, u)
	s.mu.Unlock()
	s.free(evicted)
}

// free frees lanes, each after a grace period: off any lock.
func (s *Server) free(lanes []*daemon.Lane) {
	for _, l := range lanes {
		if l == nil {
			continue
		}
		if err := l.Free(); err != nil {
			fmt.Fprintf(s.cfg.Log, "sfwatch: freeing a run's row: %v\n", err)
		}
	}
}

// unpark takes the lanes parked before cutoff (every one with the zero
// time), of every uid.
func (s *Server) unpark(cutoff time.Time) []*daemon.Lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*daemon.Lane
	for uid, u := range s.users {
		keep := u.parked[:0]
		for _, pl := range u.parked {
			if cutoff.IsZero() || pl.since.Before(cutoff) {
				out = append(out, pl.lane)
				u.ringBytes -= pl.lane.Size()
				continue
			}
			keep = append(keep, pl)
		}
		u.parked = keep
		s.forget(uid, u)
	}
	return out
}

// janitor frees the lanes parked longer than Config.ParkedFor.
func (s *Server) janitor() {
	t := time.NewTicker(s.cfg.ParkedFor / 4)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.free(s.unpark(now.Add(-s.cfg.ParkedFor)))
		}
	}
}

// Parked is the number of lanes parked for the next runs of their uids.
func (s *Server) Parked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, u := range s.users {
		n += len(u.parked)
	}
	return n
}
