//go:build unix

package upgrader

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"
)

// newCore returns tableflip: Unix systems pass descriptors to a child.
func newCore(opts Options) (core, error) {
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout, PIDFile: opts.PIDFile})
	if err != nil {
		return nil, err
	}
	return &tableflipCore{tf}, nil
}

// tableflipCore is the core on Unix systems.
type tableflipCore struct{ tf *tableflip.Upgrader }

func (c *tableflipCore) HasParent() bool                         { return c.tf.HasParent() }
func (c *tableflipCore) WaitForParent(ctx context.Context) error { return c.tf.WaitForParent(ctx) }
func (c *tableflipCore) Listener(network, addr string) (net.Listener, error) {
	return c.tf.Fds.Listener(network, addr)
}
func (c *tableflipCore) PacketConn(network, addr string) (net.PacketConn, error) {
	return c.tf.Fds.PacketConn(network, addr)
}
func (c *tableflipCore) File(name string) (*os.File, error) { return c.tf.Fds.File(name) }
func (c *tableflipCore) AddFile(name string, f *os.File) error {
	return c.tf.Fds.AddFile(name, f)
}
func (c *tableflipCore) Ready() error          { return c.tf.Ready() }
func (c *tableflipCore) CanUpgrade() error     { return nil }
func (c *tableflipCore) Upgrade() error        { return c.tf.Upgrade() }
func (c *tableflipCore) Stop()                 { c.tf.Stop() }
func (c *tableflipCore) Exit() <-chan struct{} { return c.tf.Exit() }

func (c *tableflipCore) AddListener(network, addr string, ln net.Listener) error {
	tl, ok := ln.(tableflip.Listener)
	if !ok {
		return fmt.Errorf("%T cannot be passed to another process", ln)
	}
	return c.tf.Fds.AddListener(network, addr, tl)
}

func (c *tableflipCore) AddPacketConn(network, addr string, pc net.PacketConn) error {
	tp, ok := pc.(tableflip.PacketConn)
	if !ok {
		return fmt.Errorf("%T cannot be passed to another process", pc)
	}
	return c.tf.Fds.AddPacketConn(network, addr, tp)
}

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
