//go:build !unix

package systemd

import "time"

// MonotonicUsec returns microseconds on Go's monotonic clock since the
// process started: there is no CLOCK_MONOTONIC to share with a service
// manager here, and no systemd to read it.
func MonotonicUsec() int64 {
	return time.Since(processStart).Microseconds()
}

var processStart = time.Now()
