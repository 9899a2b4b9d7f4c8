//go:build linux

package keeper

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/listener"
)

// Taken are the sockets a handoff started again got from the keeper
// of one that died with the same control socket (Main): each --listen
// address that matches one takes it instead of binding afresh.
type Taken struct {
	log   *slog.Logger
	conn  *net.UnixConn
	socks []*takenSocket
}

type takenSocket struct {
	heldSocket
	used bool
}

// TakeHeld asks a keeper holding sockets at path (config.Config.HoldPath)
// for them. It returns nil when none holds any there (nothing listens: the
// usual case).
func TakeHeld(path string, log *slog.Logger) *Taken {
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			log.Warn("cannot ask for the sockets a killed handoff left: binding them afresh", "event", "hold.take_failed", "at", path, "err", err)
		}
		return nil
	}
	uc := c.(*net.UnixConn)
	_ = uc.SetDeadline(time.Now().Add(handOverTimeout))
	t := &Taken{log: log, conn: uc}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if err == nil && n == 0 {
			err = errors.New("the keeper closed the connection")
		}
		if err != nil {
			log.Warn("the keeper of a killed handoff did not hand its sockets over: binding them afresh", "event", "hold.take_failed", "at", path, "err", err)
			t.Close()
			return nil
		}
		msg := string(buf[:n])
		if msg == "end" {
			break
		}
		files := rights(oob[:oobn])
		f := strings.SplitN(msg, " ", 4)
		if len(f) != 4 || f[0] != "sock" || len(files) != 1 || flags&unix.MSG_CTRUNC != 0 {
			log.Warn("a socket from the keeper of a killed handoff did not arrive: out of descriptors? (ulimit -n)", "event", "hold.take_failed", "msg", msg, "truncated", flags&unix.MSG_CTRUNC != 0)
			for _, f := range files {
				f.Close()
			}
			continue
		}
		t.socks = append(t.socks, &takenSocket{heldSocket: heldSocket{typ: f[1], name: f[2], addr: f[3], f: files[0]}})
	}
	_ = uc.SetDeadline(time.Time{})
	return t
}

// Take returns the held socket for a, which the caller then owns, or nil:
// the one of the same address (as given, else as the kernel has it bound)
// and type; for systemd:NAME, of that name. A socket that no longer listens
// is closed and logged, and a is bound afresh.
func (t *Taken) Take(a listener.Addr) *os.File {
	if t == nil {
		return nil
	}
	typ := "stream"
	if a.Packet() {
		typ = "dgram"
	}
	var match *takenSocket
	for _, s := range t.socks {
		if !s.used && s.typ == typ && (s.addr == a.String() || a.Network == "systemd" && s.name == a.Address) {
			match = s
			break
		}
	}
	for _, s := range t.socks {
		if match == nil && !s.used && s.typ == typ && boundTo(s.f, a) {
			match = s
		}
	}
	if match == nil {
		return nil
	}
	match.used = true
	if typ == "stream" {
		v, err := getsockoptInt(match.f, unix.SO_ACCEPTCONN)
		if err != nil || v == 0 {
			t.log.Warn("the socket a killed handoff left does not listen any more: binding it afresh", "event", "hold.unusable", "addr", a.String(), "err", err)
			match.f.Close()
			return nil
		}
	}
	t.log.Info("took the socket a killed handoff left with its keeper", "event", "hold.adopted", "addr", a.String(), "held_as", match.addr)
	return match.f
}

// Done closes the sockets no --listen address took, logging each, and tells
// the keeper that the sockets are taken: it closes its copies and exits once
// the old generations' output has ended. Call it once this handoff's own
// keeper holds the sockets, so that one of the two always does.
func (t *Taken) Done() {
	if t == nil {
		return
	}
	var unused []string
	for _, s := range t.socks {
		if !s.used {
			unused = append(unused, s.addr)
			s.f.Close()
		}
	}
	if len(unused) > 0 {
		t.log.Warn("closed sockets a killed handoff left that no --listen asks for", "event", "hold.unused", "addrs", unused)
	}
	if _, _, err := t.conn.WriteMsgUnix([]byte("taken"), nil, nil); err != nil {
		t.log.Warn("cannot tell the keeper of a killed handoff that its sockets are taken; it holds them until its hold ends", "event", "hold.take_failed", "err", err)
	}
	t.Close()
}

// Close closes what no one took, without telling the keeper: it holds on.
func (t *Taken) Close() {
	if t == nil {
		return
	}
	for _, s := range t.socks {
		if !s.used {
			s.f.Close()
		}
	}
	t.conn.Close()
}

// boundTo reports whether the socket f is bound to a's address: a's host
// resolved, an empty host as the unspecified address.
func boundTo(f *os.File, a listener.Addr) bool {
	raw, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var sa unix.Sockaddr
	_ = raw.Control(func(fd uintptr) { sa, _ = unix.Getsockname(int(fd)) })
	switch s := sa.(type) {
	case *unix.SockaddrUnix:
		return a.Network == "unix" && s.Name == a.Address
	case *unix.SockaddrInet4:
		return sameIPPort(a, s.Addr[:], s.Port)
	case *unix.SockaddrInet6:
		return sameIPPort(a, s.Addr[:], s.Port)
	}
	return false
}

func sameIPPort(a listener.Addr, ip net.IP, port int) bool {
	var want *net.UDPAddr
	switch {
	case strings.HasPrefix(a.Network, "tcp"):
		t, err := net.ResolveTCPAddr(a.Network, a.Address)
		if err != nil {
			return false
		}
		want = &net.UDPAddr{IP: t.IP, Port: t.Port}
	case strings.HasPrefix(a.Network, "udp"):
		u, err := net.ResolveUDPAddr(a.Network, a.Address)
		if err != nil {
			return false
		}
		want = u
	default:
		return false
	}
	if want.Port != port {
		return false
	}
	if want.IP == nil || want.IP.IsUnspecified() {
		return ip.IsUnspecified()
	}
	return want.IP.Equal(ip)
}

func getsockoptInt(f *os.File, opt int) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) }); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, os.NewSyscallError("getsockopt", gerr)
	}
	return v, nil
}
