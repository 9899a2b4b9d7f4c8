//go:build unix

package drain_test

import "syscall"

// unreadNow reports whether bytes wait unread on the socket fd, without
// consuming them.
func unreadNow(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n > 0 || err != nil && err != syscall.EAGAIN
}
