//go:build !linux

package upgrader

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// hoSender is the Linux sender (handover_linux.go); none here.
type hoSender struct{}

// passHandoverSocket does nothing: connections move on Linux only.
func (u *Upgrader) passHandoverSocket() {}

// adoptFromParent adopts nothing: connections move on Linux only.
func (h *Handover) adoptFromParent() { h.endAdoptions() }

func (h *Handover) send(net.Conn, syscall.RawConn, []byte, []byte) error {
	return fmt.Errorf("upgrader: handover: connections move between generations on Linux only: %w", errors.ErrUnsupported)
}
