package upgrader

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// acceptQueue returns how many connections wait, complete, in the accept
// queues of the TCP listening sockets among socks (for a listening socket,
// the kernel reports its accept queue as tcpi_unacked), and whether there
// was any such socket.
func acceptQueue(socks []any) (n int, ok bool) {
	for _, s := range socks {
		sc, is := s.(syscall.Conn)
		if !is {
			continue
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			continue
		}
		_ = raw.Control(func(fd uintptr) {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil && info.State == tcpListen {
				n += int(info.Unacked)
				ok = true
			}
		})
	}
	return n, ok
}

const tcpListen = 10 // TCP_LISTEN in the kernel's tcp_states.h
