package upgrader

import (
	"context"
	"net"
	"os"
)

// core is the descriptor-passing layer under the Upgrader: tableflip where a
// process can pass descriptors to the one it starts (tableflip_unix.go), and
// noHandoff elsewhere (fdpass_others.go), which serves and stops but cannot
// upgrade. Its methods are tableflip's.
type core interface {
	// HasParent reports whether a previous generation started this one.
	HasParent() bool
	// WaitForParent returns once the parent has exited.
	WaitForParent(ctx context.Context) error
	// Listener, PacketConn and File return what the parent passed under
	// a name, or nil.
	Listener(network, addr string) (net.Listener, error)
	PacketConn(network, addr string) (net.PacketConn, error)
	File(name string) (*os.File, error)
	// AddListener, AddPacketConn and AddFile register what the next
	// generation gets.
	AddListener(network, addr string, ln net.Listener) error
	AddPacketConn(network, addr string, pc net.PacketConn) error
	AddFile(name string, f *os.File) error
	// Ready writes the PID file and lets an upgrade start.
	Ready() error
	// CanUpgrade returns nil where Upgrade can work, else why not.
	CanUpgrade() error
	// StartDir returns the directory the next generation would start in,
	// or "" where no generation can be started.
	StartDir() string
	// NextBinary returns the file the next generation would run, symlinks
	// resolved, or an error if it cannot be found (Upgrade reports that).
	NextBinary() (string, error)
	// Upgrade starts the next generation and waits until it is ready. It
	// returns nil, or an *UpgradeError whose Kind says what failed.
	Upgrade() error
	// Stop refuses further upgrades and releases what was registered.
	Stop()
	// Exit is closed once Stop has taken effect.
	Exit() <-chan struct{}
}
