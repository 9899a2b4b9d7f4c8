package upgrader

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// handoverChannelName is the name under which channelCore gives the
// Handover its inherited channel: the one tableflip's would have.
const handoverChannelName = handoverName

// open claims the inherited channels in and out: close-on-exec, checked to
// be SOCK_SEQPACKET sockets. in becomes the channel to adopt from, out the
// Handover's channel to the next generation.
func (c *channelCore) open(u *Upgrader, in, out int) error {
	for _, fd := range []int{in, out} {
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return fmt.Errorf("upgrader: %s: descriptor %d: %w (is it inherited? handoff run --handover passes it)", HandoverChannelsEnv, fd, os.NewSyscallError("getsockopt", err))
		}
		if typ != unix.SOCK_SEQPACKET {
			return fmt.Errorf("upgrader: %s: descriptor %d is not a SOCK_SEQPACKET socket (handoff run --handover passes one; unset the variable otherwise)", HandoverChannelsEnv, fd)
		}
		unix.CloseOnExec(fd)
	}
	f := os.NewFile(uintptr(out), "handoff-handover-out")
	oc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("upgrader: %s: descriptor %d: %w", HandoverChannelsEnv, out, err)
	}
	uc, ok := oc.(*net.UnixConn)
	if !ok {
		oc.Close()
		return fmt.Errorf("upgrader: %s: descriptor %d is not a Unix socket", HandoverChannelsEnv, out)
	}
	c.in = os.NewFile(uintptr(in), "handoff-handover-in")
	u.parentPid = os.Getppid()
	u.hoNext.Store(uc)
	return nil
}

// successorAdopts reports whether handoff wrote the successor's hello on
// the channel to the next generation, without reading it (the Handover's
// sender reads it at the first Offer). Once true, this generation counts as
// handed over: its Exit is closed, so that it prepares no more connections
// from its own predecessor.
func (c *channelCore) successorAdopts(u *Upgrader) bool {
	if u.handedOver.Load() {
		return true
	}
	out := u.hoNext.Load()
	if out == nil {
		return false
	}
	rc, err := out.SyscallConn()
	if err != nil {
		return false
	}
	var b [2]byte
	n := -1
	_ = rc.Control(func(fd uintptr) {
		n, _, err = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	if err != nil || n < 2 || b[0] != 'H' {
		return false // nothing yet, or the channel closed: no successor adopts
	}
	u.handedOver.Store(true)
	c.exitOnce.Do(func() { close(u.exitC) })
	return true
}
