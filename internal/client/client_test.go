package client

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sfwatch/sfwatch/internal/protocol"
)

// TestSocket: the flag, else $SFWATCH_SOCKET, else the default.
func TestSocket(t *testing.T) {
	t.Setenv(protocol.SocketEnv, "")
	if got := Socket(""); got != protocol.DefaultSocket {
		t.Errorf("Socket() = %q, want the default", got)
	}
	t.Setenv(protocol.SocketEnv, "/env.sock")
	if got := Socket(""); got != "/env.sock" {
		t.Errorf("with $%s: %q", protocol.SocketEnv, got)
	}
	if got := Socket("/flag.sock"); got != "/flag.sock" {
		t.Errorf("with the flag: %q", got)
	}
}

// TestDialNoDaemon: no socket file, or a socket nobody accepts on (a
// killed daemon's), is ErrNoDaemon (a run then loads its own programs);
// a socket that answers is a client.
func TestDialNoDaemon(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(filepath.Join(dir, "none.sock")); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no socket: %v; want ErrNoDaemon", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := Dial(stale); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("a stale socket: %v; want ErrNoDaemon", err)
	}
	live := filepath.Join(dir, "live.sock")
	l, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: live, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := Dial(live)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gate() != filepath.Join(dir, "sfwatch-gate") {
		t.Errorf("gate %q, want next to the socket", c.Gate())
	}
	// The daemon's end goes: Hello says so.
	conn, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := c.Hello(); err == nil || !strings.Contains(err.Error(), "went away") {
		t.Errorf("Hello with the daemon's end closed: %v", err)
	}
	c.Close()
}
