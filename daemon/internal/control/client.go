//go:build linux

package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Ask sends msg to the daemon at path and decodes its reply into v, giving up
// after timeout (which must be positive): a control socket that accepts
// nothing, or a daemon that never answers, costs the caller timeout at most.
func Ask(path string, msg Message, timeout time.Duration, v any) error {
	c, err := net.DialTimeout("unix", path, min(timeout, 5*time.Second))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return fmt.Errorf("no handoff answers on %s — is 'handoff run' running? (--control gives another path)", path)
		}
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%s: permission denied — run as root or as the user handoff runs as", path)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	// A daemon that refuses the caller answers at once and closes, which
	// can fail the write with EPIPE: its answer, if one came, says why.
	werr := json.NewEncoder(c).Encode(msg)
	if err := json.NewDecoder(c).Decode(v); err != nil {
		if werr != nil {
			return fmt.Errorf("%s: %w", path, werr)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%s: no answer within %v — 'handoff run' accepted nothing or is stuck; its log says why: %w", path, timeout, err)
		}
		return fmt.Errorf("%s: no answer: %w", path, err)
	}
	return nil
}
