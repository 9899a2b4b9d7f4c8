package holdback

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/sockdiag"

	"golang.org/x/sys/unix"
)

// Set is the listening sockets held back so far. Its zero value is empty
// and ready to use. A Set is not safe for concurrent use.
type Set struct {
	tcp   map[uint64]bool // inodes of the TCP sockets
	ports map[uint16]bool // their ports, for the connections half open
	unix  map[uint64]bool // inodes of the Unix sockets
}

// Len returns how many sockets the set holds back.
func (s *Set) Len() int { return len(s.tcp) + len(s.unix) }

// synDrop is a classic BPF socket filter that drops a TCP segment that opens
// a connection (SYN without ACK) and lets every other through — the last ACK
// of a handshake already under way among them. A socket filter on a TCP
// socket sees the segment from its TCP header, whose flags are byte 13.
var synDrop = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13},
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x10, Jt: 1}, // ACK: let it through
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x02, Jt: 1}, // SYN: drop it
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// Hold holds back new connections to ln, a *net.TCPListener or a
// *net.UnixListener; other listeners are left alone (it returns nil). A
// Unix socket in the abstract namespace has no file, and queues on until it
// closes; one whose file is now another socket's (a newer process bound the
// path) is left as it is, with an error. A Unix listener no longer removes
// its file when it closes.
func (s *Set) Hold(ln net.Listener) error {
	switch l := ln.(type) {
	case *net.TCPListener:
		ino, err := inode(l)
		if err != nil {
			return err
		}
		if err := control(l, func(fd int) error {
			prog := unix.SockFprog{Len: uint16(len(synDrop)), Filter: &synDrop[0]}
			err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
			if errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("a Multipath TCP listener takes no socket filter (listen without Multipath TCP): %w", os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err))
			}
			return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
		}); err != nil {
			return err
		}
		if s.tcp == nil {
			s.tcp, s.ports = map[uint64]bool{}, map[uint16]bool{}
		}
		s.tcp[ino] = true
		s.ports[uint16(l.Addr().(*net.TCPAddr).Port)] = true
	case *net.UnixListener:
		ino, err := inode(l)
		if err != nil {
			return err
		}
		if err := removeFile(l, ino); err != nil {
			return err
		}
		if s.unix == nil {
			s.unix = map[uint64]bool{}
		}
		s.unix[ino] = true
	}
	return nil
}

// Queued returns how many connections are queued on the sockets held back,
// or half open to their ports.
func (s *Set) Queued() (int, error) {
	n := 0
	if len(s.tcp) > 0 {
		q, err := sockdiag.AcceptQueue(s.tcp)
		if err != nil {
			return 0, err
		}
		h, err := sockdiag.HalfOpen(s.ports)
		if err != nil {
			return 0, err
		}
		n += q + h
	}
	if len(s.unix) > 0 {
		q, err := sockdiag.UnixAcceptQueue(s.unix)
		if err != nil {
			return 0, err
		}
		n += q
	}
	return n, nil
}

// Wait waits until nothing is queued on the sockets held back (see Queued),
// or max has passed, and returns how many connections were left.
func (s *Set) Wait(max time.Duration) (int, error) {
	deadline := time.Now().Add(max)
	for {
		q, err := s.Queued()
		if err != nil || q == 0 || !time.Now().Before(deadline) {
			return q, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// DetachFilter removes a socket filter left on ln's socket — one a stop
// held back, that systemd's fd store kept open for the next start — so that
// it takes connections again. A socket with no filter is left as it is.
func DetachFilter(ln *net.TCPListener) error {
	err := control(ln, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return os.NewSyscallError("setsockopt SO_DETACH_FILTER", err)
}

// removeFile removes the file of ul's socket (inode ino), if it has one and
// it is still that socket's, so that a connect to the path fails with ENOENT.
func removeFile(ul *net.UnixListener, ino uint64) error {
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

// inode returns the inode of c's socket.
func inode(c syscall.Conn) (uint64, error) {
	var ino uint64
	err := control(c, func(fd int) error {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return os.NewSyscallError("fstat", err)
		}
		ino = st.Ino
		return nil
	})
	return ino, err
}

// control runs f on c's descriptor and returns its error.
func control(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
