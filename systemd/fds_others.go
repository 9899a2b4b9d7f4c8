//go:build !unix

package systemd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// NotifyWithFiles needs Unix descriptors and sockets: where there are none
// (and no systemd), it reports (false, nil) without NOTIFY_SOCKET, and an
// error wrapping errors.ErrUnsupported with it.
func NotifyWithFiles(state string, conns ...syscall.Conn) (bool, error) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return false, nil
	}
	return false, fmt.Errorf("systemd: sd_notify %q with %d fds: %w", firstLine(state), len(conns), errors.ErrUnsupported)
}

// Barrier reports (false, nil) without NOTIFY_SOCKET, and an error wrapping
// errors.ErrUnsupported with it, where there are no Unix pipes.
func Barrier(timeout time.Duration) (bool, error) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return false, nil
	}
	return false, fmt.Errorf("systemd: barrier: %w", errors.ErrUnsupported)
}
