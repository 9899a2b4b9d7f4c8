package procfs

import "golang.org/x/sys/unix"

// waitCalls maps the system calls in which a thread waits for a connection or
// datagram to how their arguments name the descriptors they wait on. arm64
// has no poll(2) or select(2); the C library uses ppoll and pselect6.
var waitCalls = map[int]waitKind{
	unix.SYS_ACCEPT:   waitFD,
	unix.SYS_ACCEPT4:  waitFD,
	unix.SYS_RECVFROM: waitFD,
	unix.SYS_RECVMSG:  waitFD,
	unix.SYS_RECVMMSG: waitFD,
	unix.SYS_READ:     waitFD,
	unix.SYS_PPOLL:    waitPoll,
	unix.SYS_PSELECT6: waitSelect,
}
