package quic

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/quicsteer"
	"github.com/handoff-dev/handoff/systemd"
)

// underHandoff reports whether this process is a generation that handoff
// run gave a quic:// socket.
func underHandoff() bool {
	_, ok := os.LookupEnv(quicsteer.EnvSlot)
	return ok
}

// FromHandoff returns the socket handoff run --listen quic://ADDR passed to
// this generation (LISTEN_FDS): the one named addr in LISTEN_FDNAMES, or
// else the UDP socket bound to addr ("host:port"; an empty or unspecified
// host matches a socket bound to any address). Its Transport writes the
// slot and key handoff gave ($HANDOFF_QUIC_SLOT, $HANDOFF_QUIC_KEY) into the
// connection IDs. The daemon holds the steering: the socket gets packets
// once this generation is ready (READY=1 on $NOTIFY_SOCKET: upgrader's
// Ready, or go-systemd's SdNotify), and leaves the group when the last
// descriptor of it closes (Socket.Close, or the process's exit). The
// program needs no privilege.
//
// Listen calls it under handoff run; call it directly in a program that
// does not use the upgrader. It fails where this process is not a
// generation of handoff run with a quic:// socket, and where no passed
// socket matches addr; the error says which names were passed.
func FromHandoff(addr string) (*Socket, error) {
	slotS, ok := os.LookupEnv(quicsteer.EnvSlot)
	if !ok {
		return nil, fmt.Errorf("quic: %s: $%s is not set: this process is not a generation of handoff run --listen quic://ADDR; use Listen, which steers by itself", addr, quicsteer.EnvSlot)
	}
	slot, err := strconv.ParseUint(slotS, 10, 8)
	if err != nil || slot >= MaxGenerations {
		return nil, fmt.Errorf("quic: %s: $%s=%q: want a slot from 0 to %d, as handoff run sets it", addr, quicsteer.EnvSlot, slotS, MaxGenerations-1)
	}
	keyS := os.Getenv(quicsteer.EnvKey)
	key, err := strconv.ParseUint(keyS, 16, 16)
	if err != nil {
		return nil, fmt.Errorf("quic: %s: $%s=%q: want 4 hexadecimal digits, as handoff run sets it", addr, quicsteer.EnvKey, keyS)
	}
	f, err := passedSocket(addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("quic: %s: the socket handoff passed: %w", addr, err)
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("quic: %s: the socket handoff passed is not a UDP socket", addr)
	}
	cids := cidGenerator{slot: uint8(slot), key: uint16(key)}
	s := &Socket{conn: conn, cids: cids}
	s.tr = &quicgo.Transport{Conn: conn, ConnectionIDGenerator: cids}
	slog.Default().Info("QUIC socket taken from handoff run; it gets packets from READY=1 on", "event", "quic.listening", "addr", addr,
		"local", conn.LocalAddr().String(), "slot", slot, "pid", os.Getpid(), "mode", "daemon")
	return s, nil
}

// passedSocket finds and takes the UDP socket handoff passed for addr, by
// name, then by address.
func passedSocket(addr string) (*os.File, error) {
	name := strings.TrimPrefix(addr, "systemd:")
	files := systemd.Activated()
	var names []string
	for _, af := range files {
		if af.File == nil {
			continue
		}
		names = append(names, af.Name)
		if af.Name == name && isUDP(af.File) {
			return take(af)
		}
	}
	want, err := net.ResolveUDPAddr("udp", addr)
	if err == nil {
		for _, af := range files {
			if af.File != nil && isUDP(af.File) && sameUDPAddr(want, af.File) {
				return take(af)
			}
		}
	}
	return nil, fmt.Errorf("quic: %s: handoff run passed no unused UDP socket of that name or address (passed: %s); give the address or the NAME of --listen NAME=quic://HOST:PORT", addr, strings.Join(names, ", "))
}

// take returns a copy of af's descriptor, close-on-exec.
func take(af systemd.ActivatedFile) (*os.File, error) {
	fd, err := unix.FcntlInt(af.File.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	return os.NewFile(uintptr(fd), af.Name), nil
}

func isUDP(f *os.File) bool {
	t, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && t == unix.SOCK_DGRAM
}

func sameUDPAddr(want *net.UDPAddr, f *os.File) bool {
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		return false
	}
	var ip net.IP
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = net.IP(a.Addr[:]), a.Port
	case *unix.SockaddrInet6:
		ip, port = net.IP(a.Addr[:]), a.Port
	default:
		return false
	}
	if port != want.Port {
		return false
	}
	return want.IP == nil || want.IP.IsUnspecified() && ip.IsUnspecified() || want.IP.Equal(ip)
}
