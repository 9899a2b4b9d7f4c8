package upgrader

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// adoptedConn is a connection adopted from the previous generation: the
// received socket, served through the runtime's poller as an *os.File.
//
// It is not net.FileConn's *net.TCPConn, for speed: FileConn dups the
// descriptor, asks the kernel for the socket's type and both addresses,
// and sets five socket options (Go's keep-alive defaults and TCP_NODELAY),
// about 15 system calls a connection with the *os.File it is made from.
// adoptedConn takes 6: on the 2-core VM measured, about 10 µs a connection
// against 39 µs, for a new generation that adopts thousands at a release.
// The socket's options stay as the previous generation set them: they
// belong to the socket, which is the same.
//
// Its errors are those of *net.TCPConn: *net.OpError, net.ErrClosed once
// closed, io.EOF at the end.
type adoptedConn struct {
	f            *os.File
	laddr, raddr net.Addr    // *net.TCPAddr or *net.UnixAddr
	closed       atomic.Bool // Close was called
}

// adoptConn makes a connection of the descriptor fd, which it owns from
// then on (on failure it is closed). fd must be a stream socket.
func adoptConn(fd int) (*adoptedConn, error) {
	fail := func(err error) (*adoptedConn, error) {
		unix.Close(fd)
		return nil, err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fail(fmt.Errorf("not a socket: %w", os.NewSyscallError("getsockopt", err)))
	}
	if typ != unix.SOCK_STREAM {
		return fail(fmt.Errorf("a socket of type %d, not a stream (TCP, or a Unix stream socket)", typ))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(os.NewSyscallError("getsockname", err))
	}
	c := &adoptedConn{laddr: sockaddrAddr(sa)}
	if c.laddr == nil {
		return fail(fmt.Errorf("a socket of family %T, neither TCP nor Unix", sa))
	}
	if peer, err := unix.Getpeername(fd); err == nil {
		c.raddr = sockaddrAddr(peer) // else nil, as net.FileConn leaves it
	}
	if fd < adoptedFdMin {
		// A process started with stdout or stderr closed receives its
		// connections there, and os would end it with SIGPIPE at a write
		// to a client that has gone: move it higher.
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, adoptedFdMin)
		if err != nil {
			return fail(os.NewSyscallError("fcntl", err))
		}
		unix.Close(fd)
		fd = nfd
	}
	// Non-blocking, for the poller (the previous generation's runtime
	// left it so, unless it was not Go's): os.NewFile then registers it.
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(os.NewSyscallError("fcntl", err))
	}
	c.f = os.NewFile(uintptr(fd), "handoff-adopted")
	if c.f == nil {
		return fail(errors.New("invalid descriptor"))
	}
	// os keeps a descriptor the poller refused (epoll's watches of this
	// user used up: fs.epoll.max_user_watches) as a file without
	// deadlines, whose reads would fail with EAGAIN: refuse it, and the
	// previous generation keeps the connection.
	if err := c.f.SetReadDeadline(time.Time{}); err != nil {
		c.f.Close()
		return nil, fmt.Errorf("the runtime's poller takes no more descriptors (raise fs.epoll.max_user_watches): %w", err)
	}
	return c, nil
}

// adoptedFdMin is the lowest descriptor an adopted connection may have:
// above stdin, stdout and stderr. (A variable, for a test.)
var adoptedFdMin = 3

// sockaddrAddr returns sa as a net.Addr: *net.TCPAddr or *net.UnixAddr,
// nil for another family.
func sockaddrAddr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
		if sa.ZoneId != 0 {
			a.Zone = strconv.Itoa(int(sa.ZoneId))
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}

func (c *adoptedConn) network() string {
	if _, ok := c.laddr.(*net.UnixAddr); ok {
		return "unix"
	}
	return "tcp"
}

// opErr turns an error of the *os.File into the one *net.TCPConn would
// return for it.
func (c *adoptedConn) opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() {
		err = net.ErrClosed // whatever os said of a closed file
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, os.ErrClosed):
		err = net.ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
	default:
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError(op, errno)
		}
	}
	return &net.OpError{Op: op, Net: c.network(), Source: c.laddr, Addr: c.raddr, Err: err}
}

// Read reads from the connection, as net.Conn's Read.
func (c *adoptedConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	if err == io.EOF {
		return n, err
	}
	return n, c.opErr("read", err)
}

// Write writes to the connection, as net.Conn's Write.
func (c *adoptedConn) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	return n, c.opErr("write", err)
}

// Close closes the connection.
func (c *adoptedConn) Close() error {
	c.closed.Store(true)
	return c.opErr("close", c.f.Close())
}

// LocalAddr returns the local address.
func (c *adoptedConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address, as the kernel said it at the
// adoption (nil if the peer had gone by then).
func (c *adoptedConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets the read and write deadlines, as net.Conn's.
func (c *adoptedConn) SetDeadline(t time.Time) error {
	return c.opErr("set", c.f.SetDeadline(t))
}

// SetReadDeadline sets the read deadline, as net.Conn's.
func (c *adoptedConn) SetReadDeadline(t time.Time) error {
	return c.opErr("set", c.f.SetReadDeadline(t))
}

// SetWriteDeadline sets the write deadline, as net.Conn's.
func (c *adoptedConn) SetWriteDeadline(t time.Time) error {
	return c.opErr("set", c.f.SetWriteDeadline(t))
}

// SyscallConn returns the raw connection, as *net.TCPConn's: once the
// connection is closed, its methods return net.ErrClosed.
func (c *adoptedConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return adoptedRaw{rc, c}, nil
}

// adoptedRaw is an adoptedConn's syscall.RawConn.
type adoptedRaw struct {
	rc syscall.RawConn
	c  *adoptedConn
}

func (r adoptedRaw) closedErr(err error) error {
	if err != nil && r.c.closed.Load() {
		return net.ErrClosed
	}
	return err
}

func (r adoptedRaw) Control(f func(fd uintptr)) error { return r.closedErr(r.rc.Control(f)) }
func (r adoptedRaw) Read(f func(fd uintptr) bool) error {
	return r.closedErr(r.rc.Read(f))
}
func (r adoptedRaw) Write(f func(fd uintptr) bool) error {
	return r.closedErr(r.rc.Write(f))
}

// control runs f on the descriptor; net.ErrClosed once closed.
func (c *adoptedConn) control(f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (c *adoptedConn) shutdown(op string, how int) error {
	return c.opErr(op, c.control(func(fd int) error {
		return os.NewSyscallError("shutdown", unix.Shutdown(fd, how))
	}))
}

// CloseRead shuts down the reading side, as *net.TCPConn's.
func (c *adoptedConn) CloseRead() error { return c.shutdown("close", unix.SHUT_RD) }

// CloseWrite shuts down the writing side, as *net.TCPConn's.
func (c *adoptedConn) CloseWrite() error { return c.shutdown("close", unix.SHUT_WR) }

func (c *adoptedConn) setInt(level, opt, v int) error {
	return c.opErr("set", c.control(func(fd int) error {
		return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, level, opt, v))
	}))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetKeepAlive turns TCP keep-alive on or off, as *net.TCPConn's.
func (c *adoptedConn) SetKeepAlive(on bool) error {
	return c.setInt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, boolInt(on))
}

// SetKeepAlivePeriod sets how long the connection stays idle before TCP
// sends keep-alive probes, as *net.TCPConn's: rounded up to whole
// seconds; 0 is Go's default, 15 s; below 0, nothing changes.
func (c *adoptedConn) SetKeepAlivePeriod(d time.Duration) error {
	switch {
	case d == 0:
		d = 15 * time.Second
	case d < 0:
		return nil
	}
	secs := int((d + time.Second - 1) / time.Second)
	return c.setInt(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs)
}

// SetLinger sets what Close does with data not yet sent, as
// *net.TCPConn's: sec < 0 sends it in the background, 0 discards it, more
// sends it for at most sec seconds.
func (c *adoptedConn) SetLinger(sec int) error {
	l := unix.Linger{Onoff: 1, Linger: int32(max(sec, 0))}
	if sec < 0 {
		l = unix.Linger{}
	}
	return c.opErr("set", c.control(func(fd int) error {
		return os.NewSyscallError("setsockopt", unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l))
	}))
}

// SetNoDelay turns TCP_NODELAY on or off, as *net.TCPConn's.
func (c *adoptedConn) SetNoDelay(on bool) error {
	return c.setInt(unix.IPPROTO_TCP, unix.TCP_NODELAY, boolInt(on))
}

// SetReadBuffer sets the socket's receive buffer, as *net.TCPConn's.
func (c *adoptedConn) SetReadBuffer(bytes int) error {
	return c.setInt(unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
}

// SetWriteBuffer sets the socket's send buffer, as *net.TCPConn's.
func (c *adoptedConn) SetWriteBuffer(bytes int) error {
	return c.setInt(unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
}
