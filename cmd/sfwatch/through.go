package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/sfwatch/sfwatch/internal/client"
	"github.com/sfwatch/sfwatch/internal/loader"
)

const viaUsage = `  --socket PATH        the daemon's socket (default $SFWATCH_SOCKET, else
                       /run/sfwatch/sfwatch.sock)
  --daemon             go through the daemon; fail when none listens
  --standalone         load sfwatch's own programs (root), even with a daemon up
`

// viaFlags choose between the daemon and sfwatch's own programs. By
// default the daemon is used when its socket answers: then nothing is
// loaded, and no privilege is needed.
type viaFlags struct {
	socket     string
	daemon     bool
	standalone bool
}

func (v *viaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&v.socket, "socket", "", "")
	fs.BoolVar(&v.daemon, "daemon", false, "")
	fs.BoolVar(&v.standalone, "standalone", false, "")
}

func (v *viaFlags) check(command string) error {
	if v.daemon && v.standalone {
		return usageError("%s: --daemon and --standalone exclude each other", command)
	}
	if v.standalone && v.socket != "" {
		return usageError("%s: --socket is the daemon's: it does not go with --standalone", command)
	}
	return nil
}

// connect returns a client of the daemon, or nil when the command loads
// its own programs, after checking that it can. forAnyUser: through the
// daemon, the command needs no privilege (run, not attach).
func (v *viaFlags) connect(command string, forAnyUser bool) (*client.Client, error) {
	if !v.standalone {
		socket := client.Socket(v.socket)
		c, err := client.Dial(socket)
		if err == nil {
			return c, nil
		}
		if v.daemon || !errors.Is(err, client.ErrNoDaemon) {
			if errors.Is(err, client.ErrNoDaemon) {
				return nil, fmt.Errorf("%s --daemon: no daemon listens on %s; start one with 'sudo sfwatch daemon --socket %s'", command, socket, socket)
			}
			return nil, fmt.Errorf("%s: %w", command, err)
		}
	}
	if _, err := privileges(); err != nil {
		if !forAnyUser {
			return nil, fmt.Errorf("%s %w", command, err)
		}
		return nil, fmt.Errorf("%s %w; or start a daemon ('sudo sfwatch daemon'), which runs it for any user", command, err)
	}
	return nil, loader.CheckKernel()
}
