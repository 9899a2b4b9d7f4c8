//go:build !linux

package quic

import (
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/upgrader"
)

type steer struct{}

func (*steer) close() {}

// Listen returns this generation's UDP socket for addr ("host:port", the
// same in every generation), steered; see the Linux documentation. The
// steering needs Linux: elsewhere Listen returns an error wrapping ErrNoBPF
// and errors.ErrUnsupported.
func Listen(u *upgrader.Upgrader, addr string) (*Socket, error) {
	return nil, fmt.Errorf("%w: %s: the steering needs Linux's BPF_PROG_TYPE_SK_REUSEPORT: %w", ErrNoBPF, addr, errors.ErrUnsupported)
}

// Stats returns the steering program's counts.
func (s *Socket) Stats() (Stats, error) { return Stats{}, errors.ErrUnsupported }

// FromHandoff returns the socket handoff run --listen quic://ADDR passed to
// this generation; see the Linux documentation. handoff run steers QUIC on
// Linux alone: elsewhere it returns an error wrapping ErrNoBPF and
// errors.ErrUnsupported.
func FromHandoff(addr string) (*Socket, error) {
	return nil, fmt.Errorf("%w: %s: handoff run steers QUIC on Linux only: %w", ErrNoBPF, addr, errors.ErrUnsupported)
}
