//go:build unix

package systemd

import (
	"time"

	"golang.org/x/sys/unix"
)

// MonotonicUsec returns CLOCK_MONOTONIC in microseconds, the clock systemd
// expects in MONOTONIC_USEC.
func MonotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().UnixMicro() // unreachable on Linux
	}
	return ts.Nano() / 1000
}
