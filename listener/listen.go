package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Source says where a socket came from.
type Source int

// The places a socket can come from, in the order they are tried.
const (
	Inherited Source = iota // from the previous generation
	Activated               // from systemd socket activation
	Bound                   // bound fresh by this process
)

// String returns "inherited", "systemd" or "bound".
func (s Source) String() string {
	switch s {
	case Inherited:
		return "inherited"
	case Activated:
		return "systemd"
	}
	return "bound"
}

// Config says where to look for a socket before binding a fresh one. The zero
// value looks only among systemd's sockets, then binds.
type Config struct {
	// Inherit returns the listener the previous generation passed for
	// network and address, or (nil, nil) when there is none.
	Inherit func(network, address string) (net.Listener, error)
	// InheritPacket is Inherit for datagram sockets.
	InheritPacket func(network, address string) (net.PacketConn, error)
	// ListenConfig is used to bind fresh TCP and Unix sockets, with
	// Multipath TCP off unless MultipathTCP says otherwise.
	ListenConfig net.ListenConfig
	// MultipathTCP binds fresh TCP listeners as Multipath TCP sockets, which
	// Go does by default. It is off here because listening sockets are
	// passed on to other programs, which expect the TCP sockets that systemd
	// gives them: the kernel refuses many socket options on an MPTCP
	// listener (a socket filter among them, with EOPNOTSUPP).
	MultipathTCP bool
}

// Listen parses addr and returns a listener for it. See Config.Listen.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	a, err := Parse(addr)
	if err != nil {
		return nil, err
	}
	var c Config
	ln, _, err := c.Listen(ctx, a)
	return ln, err
}

// Listen returns a stream listener for a: inherited through c.Inherit, else
// passed by systemd (by name for systemd:NAME, else by equal local address),
// else bound fresh. It reports which. A Unix socket bound fresh replaces a
// stale socket file that nothing answers on, and gets a.Mode; its file is not
// removed when the listener is closed, so that it survives a handoff — remove
// it on a real stop. Errors are *Error.
func (c *Config) Listen(ctx context.Context, a Addr) (net.Listener, Source, error) {
	if a.Packet() {
		return nil, 0, &Error{Addr: a.String(), Err: errors.New("is a datagram address"), Hint: "open it with ListenPacket"}
	}
	if c.Inherit != nil {
		ln, err := c.Inherit(a.Network, a.Address)
		if err != nil {
			return nil, 0, &Error{Addr: a.String(), Err: fmt.Errorf("inheriting: %w", err)}
		}
		if ln != nil {
			return ln, Inherited, nil
		}
	}
	f, err := activated(a, syscall.SOCK_STREAM)
	if err != nil {
		return nil, 0, err
	}
	if f != nil {
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, 0, &Error{Addr: a.String(), Err: fmt.Errorf("socket from systemd: %w", err), Hint: "use ListenStream= for it in the .socket unit"}
		}
		return ln, Activated, nil
	}
	ln, err := c.bind(ctx, a)
	if err != nil {
		return nil, 0, err
	}
	return ln, Bound, nil
}

// ListenPacket is Listen for datagram sockets (udp:// and systemd:NAME).
func (c *Config) ListenPacket(ctx context.Context, a Addr) (net.PacketConn, Source, error) {
	if !a.Packet() && a.Network != "systemd" {
		return nil, 0, &Error{Addr: a.String(), Err: errors.New("is a stream address"), Hint: "open it with Listen, or use udp://HOST:PORT"}
	}
	if c.InheritPacket != nil {
		pc, err := c.InheritPacket(a.Network, a.Address)
		if err != nil {
			return nil, 0, &Error{Addr: a.String(), Err: fmt.Errorf("inheriting: %w", err)}
		}
		if pc != nil {
			return pc, Inherited, nil
		}
	}
	f, err := activated(a, syscall.SOCK_DGRAM)
	if err != nil {
		return nil, 0, err
	}
	if f != nil {
		defer f.Close()
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return nil, 0, &Error{Addr: a.String(), Err: fmt.Errorf("socket from systemd: %w", err), Hint: "use ListenDatagram= for it in the .socket unit"}
		}
		return pc, Activated, nil
	}
	pc, err := c.ListenConfig.ListenPacket(ctx, a.Network, a.Address)
	if err != nil {
		return nil, 0, bindError(a, err)
	}
	return pc, Bound, nil
}

func (c *Config) bind(ctx context.Context, a Addr) (net.Listener, error) {
	if a.Network == "unix" {
		return c.bindUnix(ctx, a)
	}
	lc := c.ListenConfig
	lc.SetMultipathTCP(c.MultipathTCP)
	ln, err := lc.Listen(ctx, a.Network, a.Address)
	if err != nil {
		return nil, bindError(a, err)
	}
	return ln, nil
}

// bindUnix binds a Unix socket, replacing a stale socket file left by a
// process that died: one that refuses connections.
func (c *Config) bindUnix(ctx context.Context, a Addr) (net.Listener, error) {
	ln, err := c.ListenConfig.Listen(ctx, "unix", a.Address)
	if errors.Is(err, syscall.EADDRINUSE) && a.Address[0] != '@' {
		if stale, why := isStale(a.Address); !stale {
			return nil, &Error{Addr: a.String(), Err: err, Hint: why}
		}
		if rerr := os.Remove(a.Address); rerr != nil {
			return nil, &Error{Addr: a.String(), Err: rerr, Hint: "cannot remove the stale socket file; remove it by hand"}
		}
		ln, err = c.ListenConfig.Listen(ctx, "unix", a.Address)
	}
	if err != nil {
		return nil, bindError(a, err)
	}
	// The file must outlive this process when it hands over; whoever stops
	// for good removes it.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if a.Mode != 0 {
		if err := os.Chmod(a.Address, a.Mode); err != nil {
			ln.Close()
			return nil, &Error{Addr: a.String(), Err: err, Hint: "cannot set the socket's mode"}
		}
	}
	return ln, nil
}

// isStale reports whether the file at path is a socket nobody answers on; if
// not, why says what to do instead.
func isStale(path string) (stale bool, why string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, "the path is in use; choose another path"
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, "a file that is not a socket is in the way; remove it or choose another path"
	}
	conn, err := net.Dial("unix", path)
	if err == nil {
		conn.Close()
		return false, "a running process answers on this socket; stop it or choose another path"
	}
	return errors.Is(err, syscall.ECONNREFUSED), "cannot tell whether the socket is stale; remove it by hand"
}

func bindError(a Addr, err error) error {
	e := &Error{Addr: a.String(), Err: err}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		e.Hint = "another process is listening there; stop it or choose another port (ss -ltnp shows who)"
	case errors.Is(err, syscall.EACCES) && a.Network == "unix":
		e.Hint = "this user may not create a socket in that directory; choose a writable one such as $RUNTIME_DIRECTORY"
	case errors.Is(err, syscall.EACCES) && lowPort(a.Address):
		e.Hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit)"
	case errors.Is(err, syscall.EACCES):
		e.Hint = "permission denied by the system; check the user and any security policy"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		e.Hint = "no interface of this machine has that IP address; use one it has, or 0.0.0.0"
	case errors.Is(err, syscall.ENOENT):
		e.Hint = "the directory does not exist; create it (RuntimeDirectory= in the unit)"
	default:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			e.Err = fmt.Errorf("cannot resolve host %q: %w", dnsErr.Name, err)
			e.Hint = "use an IP address or a name this machine resolves"
		}
	}
	return e
}

func lowPort(hostport string) bool {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 1024
}
