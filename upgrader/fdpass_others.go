//go:build !unix

package upgrader

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// newCore returns noHandoff: this system cannot pass descriptors to a child.
func newCore(opts Options) (core, error) { return newNoHandoff(opts.PIDFile), nil }

func newCtlPair() (*ctl, *os.File, error) { return nil, nil, errors.ErrUnsupported }

func dupOnto(*os.File, int) error { return errors.ErrUnsupported }

func (c *ctl) sendWithFile(*os.File, string, ...any) error { return errors.ErrUnsupported }

func (c *ctl) recvWithFile(time.Time) ([]string, *os.File, error) {
	return nil, nil, errors.ErrUnsupported
}

func dupFd(int) (*os.File, error) { return nil, errors.ErrUnsupported }

// kill ends pid (there is no other signal to send here).
func kill(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// inode is not needed where no child can be started.
func inode(os.FileInfo) uint64 { return 0 }
