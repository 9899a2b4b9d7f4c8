//go:build linux && !amd64 && !arm64

package procfs

// waitCalls is empty where handoff does not know the system call numbers:
// --ready accept then sees only sockets registered in an epoll set.
var waitCalls = map[int]waitKind{}
