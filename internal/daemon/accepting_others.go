//go:build !linux

package daemon

import (
	"errors"
	"fmt"
)

// waiters needs Linux's /proc; elsewhere --ready accept never sees a
// generation ready and says why.
func waiters(root int, inodes map[uint64]bool, tree bool) (map[uint64]bool, []string, error) {
	return nil, nil, fmt.Errorf("--ready accept reads Linux's /proc: %w", errors.ErrUnsupported)
}
