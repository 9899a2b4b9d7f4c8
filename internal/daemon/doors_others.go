//go:build !linux

package daemon

import "net"

// closeDoors holds nothing back: dropping the segments that open connections
// takes a Linux socket filter (see doors_linux.go).
func (s *supervisor) closeDoors() doorsClosed { return doorsClosed{} }

// detachFilter has nothing to remove where closeDoors attaches nothing.
func detachFilter(*net.TCPListener) error { return nil }
