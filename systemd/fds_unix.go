//go:build unix

package systemd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NotifyWithFiles sends state together with the descriptors of conns
// (listeners, packet conns or *os.File), passed as SCM_RIGHTS, in one
// datagram. It is how FDSTORE=1 hands descriptors to systemd, which go-systemd
// cannot do. The descriptors are reached through SyscallConn, so they keep
// their non-blocking mode, and they stay open in the caller. Results are as in
// the package documentation.
func NotifyWithFiles(state string, conns ...syscall.Conn) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	err := withFDs(conns, nil, func(fds []int) error {
		return sendmsg(path, []byte(state), fds)
	})
	if err != nil {
		return false, fmt.Errorf("systemd: sd_notify %q with %d fds: %w", firstLine(state), len(conns), err)
	}
	return true, nil
}

// withFDs calls fn with the descriptors of conns, each held valid by its
// RawConn.Control for the duration of the call.
func withFDs(conns []syscall.Conn, fds []int, fn func([]int) error) error {
	if len(conns) == 0 {
		return fn(fds)
	}
	raw, err := conns[0].SyscallConn()
	if err != nil {
		return err
	}
	var inner error
	err = raw.Control(func(fd uintptr) {
		inner = withFDs(conns[1:], append(fds, int(fd)), fn)
	})
	if err != nil {
		return err
	}
	return inner
}

// Barrier sends BARRIER=1 and waits until the service manager has processed
// every message sent before it, or until timeout, in which case it returns
// ErrBarrierTimeout. Without systemd it returns (false, nil) at once.
func Barrier(timeout time.Duration) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	r, w, err := pipeCloexec()
	if err != nil {
		return false, fmt.Errorf("systemd: barrier: %w", err)
	}
	defer unix.Close(r)
	err = sendmsg(path, []byte("BARRIER=1"), []int{w})
	unix.Close(w)
	if err != nil {
		return false, fmt.Errorf("systemd: barrier: %w", err)
	}
	// systemd closes its copy of w once it has processed the message: the read
	// end then reports POLLHUP.
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return false, ErrBarrierTimeout
		}
		fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("systemd: barrier: %w", os.NewSyscallError("poll", err))
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return true, nil
		}
	}
}

func sendmsg(path string, msg []byte, fds []int) error {
	s, err := socketCloexec(unix.AF_UNIX, unix.SOCK_DGRAM)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// x/sys maps a leading '@' to the abstract namespace, as systemd does.
	if err := unix.Sendmsg(s, msg, oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}
