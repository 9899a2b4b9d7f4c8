// Package hangup tells whether the other end of a connected socket has
// closed.
package hangup

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Peer reports whether the peer of c has closed its end, without waiting:
// poll(2) reports POLLHUP, POLLRDHUP or POLLERR. It also reports true when
// c cannot be polled (it is closed). A write to a SOCK_SEQPACKET socket
// whose peer has closed purges the writer's own receive queue on kernels
// before 6.10; ask Peer first. The peer may still close between the two.
func Peer(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	if err := rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(pfd, 0); err == nil && n > 0 {
			hup = pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR) != 0
		}
	}); err != nil {
		return true
	}
	return hup
}
