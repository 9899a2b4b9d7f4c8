//go:build unix

package upgrader

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

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

// sendWithFile writes one line with f attached (SCM_RIGHTS): the receiver
// gets its own descriptor for it with recvWithFile. f may be closed once
// this returns; the kernel holds it in flight.
func (c *ctl) sendWithFile(f *os.File, format string, args ...any) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	line := []byte(fmt.Sprintf(format+"\n", args...))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	var werr error
	if err := raw.Control(func(fd uintptr) {
		_, _, werr = c.conn.WriteMsgUnix(line, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}

// recvWithFile reads the first line of the channel and the descriptor sent
// with it, if any. It must be the first read: what follows the line is kept
// for recv.
func (c *ctl) recvWithFile(deadline time.Time) ([]string, *os.File, error) {
	_ = c.conn.SetReadDeadline(deadline)
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	var f *os.File
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			for i, fd := range fds {
				if err == nil && i == 0 && f == nil {
					unix.CloseOnExec(fd)
					f = os.NewFile(uintptr(fd), "handoff-stderr")
				} else {
					unix.Close(fd)
				}
			}
		}
	}
	// The line, and whatever came after it, go through the reader.
	c.r = bufio.NewReader(io.MultiReader(bytes.NewReader(buf[:n]), c.conn))
	fields, err := c.recv(deadline)
	if err != nil && f != nil {
		f.Close()
		f = nil
	}
	return fields, f, err
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

// dupFd returns a close-on-exec copy of fd.
func dupFd(fd int) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return os.NewFile(uintptr(nfd), "stderr"), nil
}

// kill sends sig to pid.
func kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// inode returns the inode number of the file fi describes.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
