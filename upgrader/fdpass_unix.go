//go:build unix

package upgrader

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// newCtlPair returns the two ends of a new control channel.
func newCtlPair() (parent *ctl, child *os.File, err error) {
	// As the standard library does where SOCK_CLOEXEC is missing (macOS):
	// no process is forked between the socketpair and the close-on-exec.
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "handoff-ctl-parent")
	defer pf.Close()
	child = os.NewFile(uintptr(fds[1]), "handoff-ctl-child")
	parent, err = ctlFromFile(pf)
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return parent, child, nil
}

// dupOnto makes descriptor fd a copy of f.
func dupOnto(f *os.File, fd int) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var dupErr error
	if err := raw.Control(func(src uintptr) { dupErr = unix.Dup2(int(src), fd) }); err != nil {
		return err
	}
	return os.NewSyscallError("dup2", dupErr)
}

// kill sends sig to pid.
func kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }
