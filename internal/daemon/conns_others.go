//go:build !linux

package daemon

import (
	"errors"
	"fmt"
)

// connInfo is what the kernel reports of one TCP connection (Linux only).
type connInfo struct {
	segsIn, segsOut        uint32
	lastRecvMs, lastSentMs uint32
	rqueue                 uint32
}

// tcpConns needs Linux's sock_diag: elsewhere the bake window's connection
// checks do not run.
func tcpConns(map[uint16]bool) (map[uint64]connInfo, error) {
	return nil, fmt.Errorf("the connection checks read Linux's sock_diag: %w", errors.ErrUnsupported)
}

func socketInodes([]int) map[uint64]bool { return nil }

func processTree(int) ([]int, error) {
	return nil, fmt.Errorf("reading process trees needs Linux's /proc: %w", errors.ErrUnsupported)
}
