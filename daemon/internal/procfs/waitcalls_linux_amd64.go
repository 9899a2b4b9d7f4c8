package procfs

import "golang.org/x/sys/unix"

// waitCalls maps the system calls in which a thread waits for a connection or
// datagram to how their arguments name the descriptors they wait on.
var waitCalls = map[int]waitKind{
	unix.SYS_ACCEPT:   waitFD,
	unix.SYS_ACCEPT4:  waitFD,
	unix.SYS_RECVFROM: waitFD,
	unix.SYS_RECVMSG:  waitFD,
	unix.SYS_RECVMMSG: waitFD,
	unix.SYS_READ:     waitFD,
	unix.SYS_POLL:     waitPoll,
	unix.SYS_PPOLL:    waitPoll,
	unix.SYS_SELECT:   waitSelect,
	unix.SYS_PSELECT6: waitSelect,
}
