//go:build unix

package drain

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// received returns how many bytes the kernel has received on c from its
// peer (TCP_INFO), whether or not the server has read them; ok is false
// where the kernel does not tell (Unix sockets, systems other than Linux).
func received(c net.Conn) (n uint64, ok bool) {
	raw := rawConn(c)
	if raw == nil {
		return 0, false
	}
	_ = raw.Control(func(fd uintptr) {
		n, ok = tcpReceived(int(fd))
	})
	return n, ok
}

// shutIfQuiet sends the FIN on c, and reports true, unless a request may be
// on its way in: bytes wait unread in the kernel, or (when known, ok) the
// kernel has received bytes since it counted rcvd. The check and the
// shutdown(2) are one step. Closing through net.Conn.Close instead would
// leave the socket open until the server's goroutine reading c has woken and
// unwound — long enough, on a busy machine, for a client's request to arrive
// and be answered with a reset.
func shutIfQuiet(c net.Conn, rcvd uint64, ok bool) bool {
	raw := rawConn(c)
	if raw == nil {
		// A wrapper that hides its socket: the check cannot be made, and
		// the caller closes it as idle, the best that can be done.
		return true
	}
	shut := false
	_ = raw.Control(func(fd uintptr) {
		var buf [1]byte
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil && n > 0:
			return // a request waits
		case err != nil && !errors.Is(err, unix.EAGAIN):
			shut = true // reset or otherwise broken: nothing to lose
			return
		}
		// Nothing waits (EAGAIN), or the peer has closed its side (n == 0).
		if ok {
			if now, known := tcpReceived(int(fd)); !known || now != rcvd {
				return // bytes came in since rcvd: the server may hold a request
			}
		}
		shut = unix.Shutdown(int(fd), unix.SHUT_WR) == nil
	})
	return shut
}
