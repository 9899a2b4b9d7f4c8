package upgrader

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// noHandoff is the core where a process cannot pass its sockets to the one
// it starts: there is never a parent, nothing is registered for a next
// generation, and Upgrade fails with errors.ErrUnsupported. The server
// serves, and drains on a stop, as anywhere else. It builds everywhere, so
// that its path is tested on Linux too.
type noHandoff struct {
	pidFile  string
	stopOnce sync.Once
	exitC    chan struct{}

	mu        sync.Mutex
	unixFiles []string // Unix socket files to remove on Stop, as tableflip does
}

func newNoHandoff(pidFile string) *noHandoff {
	return &noHandoff{pidFile: pidFile, exitC: make(chan struct{})}
}

func (*noHandoff) HasParent() bool                                   { return false }
func (*noHandoff) WaitForParent(context.Context) error               { return nil }
func (*noHandoff) Listener(string, string) (net.Listener, error)     { return nil, nil }
func (*noHandoff) PacketConn(string, string) (net.PacketConn, error) { return nil, nil }
func (*noHandoff) File(string) (*os.File, error)                     { return nil, nil }
func (*noHandoff) AddPacketConn(string, string, net.PacketConn) error {
	return nil
}
func (*noHandoff) AddFile(string, *os.File) error { return nil }

// AddListener notes the file of a Unix socket this process bound, which Stop
// removes; tableflip does the same for sockets registered as "unix".
func (n *noHandoff) AddListener(network, addr string, _ net.Listener) error {
	if network == "unix" {
		n.mu.Lock()
		n.unixFiles = append(n.unixFiles, addr)
		n.mu.Unlock()
	}
	return nil
}

// Ready writes the PID file, atomically, as tableflip does.
func (n *noHandoff) Ready() error {
	if n.pidFile == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(n.pidFile), ".pid-")
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), n.pidFile)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

func (*noHandoff) CanUpgrade() error           { return errNoHandoff }
func (*noHandoff) StartDir() string            { return "" }
func (*noHandoff) NextBinary() (string, error) { return "", errNoHandoff }
func (*noHandoff) Upgrade() error              { return errNoHandoff }

// Stop removes the Unix socket files noted by AddListener and closes Exit.
func (n *noHandoff) Stop() {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		for _, f := range n.unixFiles {
			os.Remove(f)
		}
		n.mu.Unlock()
		close(n.exitC)
	})
}

func (n *noHandoff) Exit() <-chan struct{} { return n.exitC }
