//go:build linux

package doors

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/internal/sdjob"
	"github.com/handoff-dev/handoff/internal/sockdiag"

	"golang.org/x/sys/unix"
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

// synDrop is a classic BPF socket filter that drops a TCP segment that opens
// a connection (SYN without ACK) and lets every other through. A socket
// filter on a TCP socket sees the segment from its TCP header, whose flags
// are byte 13.
var synDrop = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13},
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x10, Jt: 1}, // ACK: let it through
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x02, Jt: 1}, // SYN: drop it
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
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
	inodes, ports, unixInodes := map[uint64]bool{}, map[uint16]bool{}, map[uint64]bool{}
	for i, sk := range socks {
		c := sk.Listener
		if ul, ok := c.(*net.UnixListener); ok {
			if kept(i) {
				r.Left = append(r.Left, sk.Addr)
				r.ParentUnknown = parent == nil
				continue
			}
			if err := removeUnixPath(ul, sk.Inode); err != nil {
				r.Err = errors.Join(r.Err, fmt.Errorf("%s: %w", sk.Addr, err))
				continue
			}
			unixInodes[sk.Inode] = true
			r.Held++
			continue
		}
		ln, ok := c.(*net.TCPListener)
		if !ok {
			continue
		}
		if kept(i) {
			r.Left = append(r.Left, sk.Addr)
			r.ParentUnknown = parent == nil
			continue
		}
		if err := dropSYNs(ln); err != nil {
			r.Err = errors.Join(r.Err, fmt.Errorf("%s: %w", sk.Addr, err))
			continue
		}
		inodes[sk.Inode] = true
		ports[uint16(ln.Addr().(*net.TCPAddr).Port)] = true
		r.Held++
	}
	for r.Held > 0 {
		var q int
		var err error
		if len(inodes) > 0 {
			if q, err = sockdiag.AcceptQueue(inodes); err == nil {
				var h int
				h, err = sockdiag.HalfOpen(ports)
				q += h
			}
		}
		if err == nil && len(unixInodes) > 0 {
			var u int
			u, err = sockdiag.UnixAcceptQueue(unixInodes)
			q += u
		}
		if err != nil {
			r.Err = errors.Join(r.Err, err)
			break
		}
		r.Queued = q
		if q == 0 || time.Since(start) >= doorsWait {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.Took = time.Since(start)
	return r
}

// removeUnixPath removes the file of ul's socket (inode ino), if it has one
// and it is still that socket's — not one a newer process bound at the same
// path: a Unix connect to the path then fails with ENOENT. The listener no
// longer removes it when it closes.
func removeUnixPath(ul *net.UnixListener, ino uint64) error {
	path := ul.Addr().String()
	if path == "" || path[0] == '@' {
		return nil // the abstract namespace: no file
	}
	ul.SetUnlinkOnClose(false)
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("%s is no longer a socket (%s): left as it is", path, st.Mode().Type())
	}
	if ls, err := sockdiag.UnixListeners(map[uint64]bool{ino: true}); err == nil {
		if l, ok := ls[ino]; ok && l.VFSIno != 0 && l.VFSIno != st.Sys().(*syscall.Stat_t).Ino {
			return fmt.Errorf("%s is another socket's file now (a newer process bound it): left as it is", path)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// dropSYNs attaches synDrop to the listening socket of ln (shared with every
// process that holds it).
func dropSYNs(ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(synDrop)), Filter: &synDrop[0]}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", serr)
}

// DetachFilter removes a socket filter that a stopping handoff left on the
// listening socket of ln — one kept open for handoff's next start by
// systemd's fd store (FileDescriptorStorePreserve=) — so that it takes
// connections again. A socket with no filter is left as it is.
func DetachFilter(ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}); err != nil {
		return err
	}
	if errors.Is(serr, unix.ENOENT) {
		return nil
	}
	return os.NewSyscallError("setsockopt SO_DETACH_FILTER", serr)
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
