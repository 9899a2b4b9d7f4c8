//go:build !linux

package holdback

import (
	"net"
	"time"
)

// Set is the listening sockets held back so far; elsewhere than on Linux it
// holds none back.
type Set struct{}

// Len returns how many sockets the set holds back: none here.
func (s *Set) Len() int { return 0 }

// Hold does nothing here.
func (s *Set) Hold(net.Listener) error { return nil }

// Queued returns 0 here.
func (s *Set) Queued() (int, error) { return 0, nil }

// Wait returns at once here.
func (s *Set) Wait(time.Duration) (int, error) { return 0, nil }

// DetachFilter does nothing here.
func DetachFilter(*net.TCPListener) error { return nil }
