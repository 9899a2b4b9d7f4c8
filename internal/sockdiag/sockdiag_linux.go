package sockdiag

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is what the kernel reports of one established TCP connection
// (sock_diag, with its tcp_info).
type Conn struct {
	SegsIn, SegsOut        uint32 // data segments received and sent
	LastRecvMs, LastSentMs uint32 // milliseconds since it last received, sent data
	RQueue                 uint32 // bytes received that the program has not read
}

// Pending reports whether c received data at least after ago, and has sent
// nothing since: a request waiting for its answer.
func (c Conn) Pending(after time.Duration) bool {
	return c.SegsIn > 0 && (c.SegsOut == 0 || c.LastRecvMs < c.LastSentMs) && time.Duration(c.LastRecvMs)*time.Millisecond >= after
}

// Constants of sock_diag(7) and inet_diag that x/sys does not name.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagInfo     = 2  // INET_DIAG_INFO: a struct tcp_info
	tcpEstablished   = 1
	tcpSynRecv       = 3
	tcpCloseWait     = 8
	tcpListen        = 10
	tcpNewSynRecv    = 12 // a request socket: a connection half open
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	inetDiagBytecode = 1  // INET_DIAG_REQ_BYTECODE: the request's filter
	inetDiagBcSGE    = 2  // INET_DIAG_BC_S_GE: local port at least
	inetDiagBcSLE    = 3  // INET_DIAG_BC_S_LE: local port at most
)

// TCPConns returns, by inode, the established TCP connections (IPv4 and
// IPv6) whose local port is one of ports, with their tcp_info, as the
// kernel's sock_diag interface lists them.
func TCPConns(ports map[uint16]bool) (map[uint64]Conn, error) {
	out := map[uint64]Conn{}
	err := dump(1<<tcpEstablished|1<<tcpCloseWait, portFilter(ports), func(port uint16, ino uint64, rqueue uint32, attrs []byte) {
		if ports[port] {
			c := parseTCPInfo(attrs)
			c.RQueue = rqueue
			out[ino] = c
		}
	})
	return out, err
}

// AcceptQueue returns how many connections wait, complete, in the accept
// queues of the listening sockets of inodes: the kernel reports a listening
// socket's accept queue as its receive queue.
func AcceptQueue(inodes map[uint64]bool) (int, error) {
	n := 0
	err := dump(1<<tcpListen, nil, func(_ uint16, ino uint64, rqueue uint32, _ []byte) {
		if inodes[ino] {
			n += int(rqueue)
		}
	})
	return n, err
}

// dump lists the TCP sockets, IPv4 and IPv6, in the states of the mask
// that pass filter (inet_diag bytecode; nil passes all), and calls f with
// each one's local port, inode, receive queue and attributes (a struct
// tcp_info among them).
//
// The kernel applies the filter itself: a machine with many connections on
// other ports (20,000 here, from other programs) then costs neither the
// kernel's tcp_info for each nor their copy to handoff — an unfiltered look
// took 30-160 ms of CPU there, 4 times a second for the liveness checks,
// taken from the programs handoff starts.
func dump(states uint32, filter []byte, f func(port uint16, ino uint64, rqueue uint32, attrs []byte)) error {
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpFamily(family, states, filter, f); err != nil {
			return err
		}
	}
	return nil
}

func dumpFamily(family uint8, states uint32, filter []byte, f func(port uint16, ino uint64, rqueue uint32, attrs []byte)) error {
	// struct inet_diag_req_v2: family, protocol, extensions, pad, states,
	// and a zero struct inet_diag_sockid; then the filter, as the
	// attribute INET_DIAG_REQ_BYTECODE.
	req := make([]byte, 56, 56+4+len(filter))
	req[0], req[1], req[2] = family, unix.IPPROTO_TCP, 1<<(inetDiagInfo-1)
	ne := binary.NativeEndian
	ne.PutUint32(req[4:], states)
	if filter != nil {
		req = ne.AppendUint16(req, uint16(4+len(filter)))
		req = ne.AppendUint16(req, inetDiagBytecode)
		req = append(req, filter...)
	}
	return dumpMsgs("sock_diag", req, func(data []byte) {
		if len(data) < inetDiagMsgLen {
			return
		}
		// struct inet_diag_msg: family, state, timer, retrans; the
		// sockid, whose local port (network order) comes first; expires,
		// rqueue, wqueue, uid, inode.
		port := binary.BigEndian.Uint16(data[4:6])
		f(port, uint64(ne.Uint32(data[68:72])), ne.Uint32(data[56:60]), data[inetDiagMsgLen:])
	})
}

// portFilter returns the inet_diag bytecode that passes the sockets whose
// local port is one of ports, and no other; nil (no filter) for more ports
// than the bytecode's 16-bit jumps reach.
//
// The kernel runs it over each socket: an op of 4 bytes (code, then yes as
// a byte and no as a uint16: how far to jump on each outcome) followed, for
// a port comparison, by a second op whose no holds the port; a socket
// passes when a jump lands exactly at the end, and fails when one lands
// past it. The kernel's audit wants every op reached by the yes jumps, and
// each jump at least one op long. Each port is a block: S_GE, S_LE (known
// to every kernel with sock_diag; S_EQ came with Linux 4.16), and a JMP to
// the end, which both comparisons reach only within the range; either one
// failing goes on to the next block, or past the end from the last. With no
// port, a lone jump past the end fails every socket.
func portFilter(ports map[uint16]bool) []byte {
	const (
		bcJmp = 1 // INET_DIAG_BC_JMP: always takes no
		block = 20
	)
	if block*len(ports)+4 > 1<<16-1 {
		return nil
	}
	ne := binary.NativeEndian
	op := func(b []byte, code, yes uint8, no int) []byte {
		return ne.AppendUint16(append(b, code, yes), uint16(no))
	}
	if len(ports) == 0 {
		return op(nil, bcJmp, 4, 8)
	}
	sorted := make([]uint16, 0, len(ports))
	for p := range ports {
		sorted = append(sorted, p)
	}
	slices.Sort(sorted)
	total := block * len(sorted)
	out := make([]byte, 0, total)
	for i, p := range sorted {
		left := total - i*block // bytes from this block's start to the end
		fail := block           // from the block's start to the next block
		if i == len(sorted)-1 {
			fail = left + 4 // past the end
		}
		out = op(out, inetDiagBcSGE, 8, fail)
		out = op(out, 0, 0, int(p))
		out = op(out, inetDiagBcSLE, 8, fail-8)
		out = op(out, 0, 0, int(p))
		out = op(out, bcJmp, 4, left-16)
	}
	return out
}

// dumpMsgs sends the sock_diag dump request req (the family's request
// struct, after the netlink header this adds) and calls f with the data of
// each message of the answer, until the dump is done. what names the
// interface in errors.
func dumpMsgs(what string, req []byte, f func(data []byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], sockDiagByFamily)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(msg[8:], 1)
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto "+what, err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return os.NewSyscallError("recvfrom "+what, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return os.NewSyscallError(what, syscall.Errno(-e))
					}
				}
				return nil
			}
			f(m.Data)
		}
	}
}

// parseTCPInfo finds INET_DIAG_INFO among attrs and reads the fields of
// struct tcp_info that Conn holds.
func parseTCPInfo(attrs []byte) Conn {
	ne := binary.NativeEndian
	for len(attrs) >= 4 {
		l, typ := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if typ == inetDiagInfo {
			var ti unix.TCPInfo
			n := copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti)), attrs[4:l])
			// An old kernel's tcp_info may end before data_segs_out.
			c := Conn{LastRecvMs: ti.Last_data_recv, LastSentMs: ti.Last_data_sent}
			if uintptr(n) >= unsafe.Offsetof(ti.Data_segs_out)+4 {
				c.SegsIn, c.SegsOut = ti.Data_segs_in, ti.Data_segs_out
			}
			return c
		}
		attrs = attrs[(l+3)&^3:]
	}
	return Conn{}
}

// UnixListener is what unix_diag reports of a listening Unix socket.
type UnixListener struct {
	Queued int    // connections waiting to be accepted
	VFSIno uint64 // the inode of the file it is bound to; 0 if none
}

// Constants of unix_diag (linux/unix_diag.h) that x/sys does not name.
const (
	unixDiagShowVFS   = 0x02 // UDIAG_SHOW_VFS
	unixDiagShowRQLen = 0x10 // UDIAG_SHOW_RQLEN
	unixDiagVFS       = 1    // UNIX_DIAG_VFS: struct unix_diag_vfs
	unixDiagRQLen     = 4    // UNIX_DIAG_RQLEN: struct unix_diag_rqlen
	unixDiagMsgLen    = 16   // struct unix_diag_msg
)

// UnixListeners returns, by socket inode, the listening Unix sockets of
// inodes as the kernel's unix_diag lists them: for a listening socket, the
// receive queue it reports is its accept queue.
func UnixListeners(inodes map[uint64]bool) (map[uint64]UnixListener, error) {
	// struct unix_diag_req: family, protocol, pad, states, inode, what to
	// show, cookie.
	req := make([]byte, 24)
	ne := binary.NativeEndian
	req[0] = unix.AF_UNIX
	ne.PutUint32(req[4:], 1<<tcpListen) // TCP_LISTEN names a listening Unix socket's state too
	ne.PutUint32(req[12:], unixDiagShowVFS|unixDiagShowRQLen)
	out := map[uint64]UnixListener{}
	err := dumpMsgs("unix_diag", req, func(data []byte) {
		if len(data) < unixDiagMsgLen {
			return
		}
		ino := uint64(ne.Uint32(data[4:8]))
		if !inodes[ino] {
			return
		}
		var info UnixListener
		attrs := data[unixDiagMsgLen:]
		for len(attrs) >= 4 {
			l, typ := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
			if l < 4 || l > len(attrs) {
				break
			}
			switch {
			case typ == unixDiagRQLen && l >= 12:
				info.Queued = int(ne.Uint32(attrs[4:]))
			case typ == unixDiagVFS && l >= 12:
				info.VFSIno = uint64(ne.Uint32(attrs[4:]))
			}
			attrs = attrs[(l+3)&^3:]
		}
		out[ino] = info
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UnixAcceptQueue returns how many connections wait in the accept queues of
// the listening Unix sockets of inodes.
func UnixAcceptQueue(inodes map[uint64]bool) (int, error) {
	ls, err := UnixListeners(inodes)
	n := 0
	for _, l := range ls {
		n += l.Queued
	}
	return n, err
}

// HalfOpen returns how many connections to ports are half open: their SYN
// was answered, and the handshake's last ACK has not come.
func HalfOpen(ports map[uint16]bool) (int, error) {
	n := 0
	err := dump(1<<tcpSynRecv|1<<tcpNewSynRecv, portFilter(ports), func(port uint16, _ uint64, _ uint32, _ []byte) {
		if ports[port] {
			n++
		}
	})
	return n, err
}
