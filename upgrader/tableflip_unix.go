//go:build unix

package upgrader

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// This file is the one place that speaks to tableflip, the fd-passing core on
// Unix systems: it turns tableflip's results and races into the Upgrader's
// typed errors.

// newCore returns tableflip: Unix systems pass descriptors to a child.
func newCore(opts Options) (core, error) {
	// With a bake, the child tells tableflip it is ready only once baked:
	// tableflip's timeout covers both, and the Upgrader enforces
	// UpgradeTimeout itself (startNext).
	timeout := opts.UpgradeTimeout
	if opts.Bake > 0 {
		timeout += opts.Bake + 5*time.Second
	}
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: timeout, PIDFile: opts.PIDFile})
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

// startDir is where tableflip starts every child: the working directory as
// os.Getwd returned it when this process started (tableflip reads it in its
// package initialisation, and nothing of ours runs before that). It is $PWD
// when $PWD names the working directory, else the path the kernel resolved.
var startDir, _ = os.Getwd()

func (c *tableflipCore) StartDir() string { return startDir }

// NextBinary returns the file tableflip would exec: os.Args[0], looked up as
// it does, symlinks resolved.
func (c *tableflipCore) NextBinary() (string, error) {
	file, err := exec.LookPath(os.Args[0])
	if err == nil {
		file, err = filepath.EvalSymlinks(file)
	}
	if err == nil {
		file, err = filepath.Abs(file)
	}
	return file, err
}

// Ready calls tableflip's Ready, which writes the PID file and then tells the
// parent through a pipe; a failure of that last step, which tableflip words
// "can't notify parent process: …", wraps errParentUnreachable.
func (c *tableflipCore) Ready() error {
	err := c.tf.Ready()
	if err != nil && strings.Contains(err.Error(), "can't notify parent") {
		return fmt.Errorf("%w: %v", errParentUnreachable, err)
	}
	return err
}

func (c *tableflipCore) CanUpgrade() error     { return nil }
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

// Upgrade calls tableflip's Upgrade and returns nil, or an *UpgradeError
// whose Kind says what failed.
//
// tableflip's own loop learns that this process is ready, and that its parent
// has exited, from channels it selects on together with upgrade requests, so
// right after either event it may still refuse ("process is not ready yet",
// "parent hasn't exited") although both are true. Those refusals start no
// process: ask again, for at most a second.
func (c *tableflipCore) Upgrade() error {
	deadline := time.Now().Add(time.Second)
	for {
		err := c.tf.Upgrade()
		if err == nil {
			return nil
		}
		msg := err.Error()
		if time.Now().Before(deadline) && (strings.Contains(msg, "not ready yet") || strings.Contains(msg, "parent hasn't exited")) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		cause := err
		for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
			if strings.Contains(msg, e.Error()) {
				cause = fmt.Errorf("%v: %w", err, e) // so that errors.Is finds it
			}
		}
		return &UpgradeError{Kind: classify(msg), Cause: cause}
	}
}

// classify maps tableflip's error, which it formats with %s and so cannot be
// compared with errors.Is, to one of the kinds of UpgradeError. tableflip
// v1.2.3 words them "can't start child: …", "child pid=N exited: …", "new
// child pid=N timed out" and "terminating".
func classify(msg string) error {
	switch {
	case strings.Contains(msg, "can't start"):
		return ErrStart
	case strings.Contains(msg, "timed out"):
		return ErrTimeout
	case strings.Contains(msg, "terminating"):
		return ErrStopped
	}
	return ErrExited
}
