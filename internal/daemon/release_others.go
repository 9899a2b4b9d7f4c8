//go:build !linux

package daemon

// releaseSockets closes this process's own copies of the listening sockets
// (see release_linux.go); the upgrader's copies stay open until it stops,
// since only Linux lists a process's descriptors in /proc.
func (s *supervisor) releaseSockets() { s.closeOwnCopies() }
