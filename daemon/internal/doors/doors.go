//go:build linux

package doors

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/internal/holdback"
	"github.com/handoff-dev/handoff/internal/sdjob"
)

// doorsWait bounds how long a stop waits for the generations to take the
// connections already queued once new ones are held back.
const doorsWait = time.Second

// Socket is one of handoff's listening sockets, as Close needs it.
type Socket struct {
	Listener io.Closer // a *net.TCPListener or *net.UnixListener; others are left alone
	Inode    uint64
	Addr     string // as handoff names it, for the result
	// Stored: the socket is handoff's own and is in systemd's fd store,
	// not a .socket unit's.
	Stored bool
}

// Result is what Close did.
type Result struct {
	Held int      // sockets that drop new connections
	Left []string // sockets left open to them: handoff's parent (a service manager) holds them too
	// ParentUnknown: handoff could not read its parent's descriptors, and
	// left every socket alone.
	ParentUnknown bool
	Queued        int           // connections still queued or half open when the wait ended
	Took          time.Duration // how long it took
	Err           error
	// Job is what systemd says stops handoff's unit ("stop", "restart"),
	// asked when sockets of handoff's own are in its fd store; JobErr why
	// it could not be told.
	Job    string
	JobErr error
}

// Close readies a stop of the listening TCP sockets that handoff and its
// generations alone hold: it drops the segments that open connections, so
// that the kernel completes no new handshake, and waits (up to doorsWait)
// until the generations, still serving, have taken every connection already
// queued or half open. When a generation then closes a socket, nothing waits
// in it to be reset; a client whose SYN was dropped sends it again a second
// later and is refused by then, or gets through if the socket still listens.
//
// A socket filter cannot drop a Unix connect: a Unix stream socket's path is
// removed instead, so that a new connect fails at once (ENOENT, "no such
// file": refused), and the generations take what is queued. A socket in the
// abstract namespace has no path, and queues on until it closes.
//
// A socket that handoff's parent holds too — a service manager's .socket unit
// or fd store — is left alone: it outlives the stop, and queues connections
// for the next start. But systemd empties the fd store when the unit stops
// for good, resetting what queued there: the sockets handoff itself put in
// the store are held back as its own when systemd says the stop is not a
// restart (sdjob.StopJob).
func Close(socks []Socket) Result {
	var r Result
	start := time.Now()
	parent := parentSockets()
	asked := false
	// kept reports whether socket i outlives this stop in the parent's
	// hands, so that connections to it are to queue.
	kept := func(i int) bool {
		if parent == nil || !parent[socks[i].Inode] {
			return parent == nil
		}
		if !socks[i].Stored {
			return true // a .socket unit's
		}
		if !asked {
			asked = true
			r.Job, r.JobErr = sdjob.StopJob()
		}
		return r.Job != "stop"
	}
	var held holdback.Set
	for i, sk := range socks {
		ln, ok := sk.Listener.(net.Listener)
		if !ok {
			continue
		}
		switch ln.(type) {
		case *net.TCPListener, *net.UnixListener:
		default:
			continue
		}
		if kept(i) {
			r.Left = append(r.Left, sk.Addr)
			r.ParentUnknown = parent == nil
			continue
		}
		if err := held.Hold(ln); err != nil {
			r.Err = errors.Join(r.Err, fmt.Errorf("%s: %w", sk.Addr, err))
			continue
		}
		r.Held++
	}
	if held.Len() > 0 {
		var err error
		r.Queued, err = held.Wait(doorsWait)
		r.Err = errors.Join(r.Err, err)
	}
	r.Took = time.Since(start)
	return r
}

// parentSockets returns the inodes of the sockets handoff's parent holds, an
// empty set when handoff has no parent (PID 1 of a container), and nil when
// they cannot be read.
func parentSockets() map[uint64]bool {
	ppid := os.Getppid()
	if ppid == 0 {
		return map[uint64]bool{}
	}
	if _, err := os.ReadDir("/proc/" + strconv.Itoa(ppid) + "/fd"); err != nil {
		return nil
	}
	return procfs.SocketInodes([]int{ppid})
}
