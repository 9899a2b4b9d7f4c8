package quic

import (
	"errors"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// ErrNoBPF is wrapped by Listen's error when the kernel or the process's
// privileges do not allow the steering program; the error says which.
var ErrNoBPF = errors.New("quic: cannot steer QUIC packets between generations with BPF")

// ErrTooManyGenerations is wrapped by Listen's error when the generation's
// slot is still held by the generation MaxGenerations before it (still
// draining): the new generation fails, so that the upgrade fails and the
// serving generation serves on. Upgrade again once the old one has exited.
var ErrTooManyGenerations = errors.New("quic: more generations alive than the connection ID cookie tells apart")

// Socket is this generation's UDP socket for one address, in the group of
// all generations' sockets for it, with the steering that sends it the
// packets of its own QUIC connections. Create it with Listen.
type Socket struct {
	conn *net.UDPConn
	tr   *quicgo.Transport
	cids cidGenerator
	st   *steer // the platform's steering state

	closeOnce sync.Once
	closeErr  error
}

// Transport returns the quic-go Transport on the socket, with the
// ConnectionIDGenerator that writes this generation's cookie. Listen and
// dial on it; do not replace its ConnectionIDGenerator or set
// ConnectionIDLength. Close the Socket, not the Transport.
func (s *Socket) Transport() *quicgo.Transport { return s.tr }

// PacketConn returns the UDP socket itself, for programs that build their
// own quic.Transport on it: they must set its ConnectionIDGenerator to
// ConnectionIDGenerator(), or no packet after the first flight reaches them.
func (s *Socket) PacketConn() *net.UDPConn { return s.conn }

// ConnectionIDGenerator returns the generator of the connection IDs that
// carry this generation's cookie (CIDLen bytes).
func (s *Socket) ConnectionIDGenerator() quicgo.ConnectionIDGenerator { return s.cids }

// Slot returns this generation's slot: what its connection IDs carry.
func (s *Socket) Slot() int { return int(s.cids.slot) }

// Stats counts the datagrams the steering program saw, for all generations
// of the service, since its first generation started (see Socket.Stats).
type Stats struct {
	// ByCookie went to the generation their connection ID names.
	ByCookie uint64
	// ToNewest were Initial or 0-RTT packets with the client's own
	// connection ID, sent to the newest ready generation.
	ToNewest uint64
	// Malformed were dropped: too short to be QUIC, or not QUIC.
	Malformed uint64
	// Gone were dropped: the generation their connection ID names has
	// exited (or a Handshake packet named none).
	Gone uint64
	// NoReady were dropped: no generation was ready.
	NoReady uint64

	// Runs and RunTime are the kernel's count of this generation's
	// program's runs and their total time, which it keeps only while its
	// BPF statistics are enabled (sysctl kernel.bpf_stats_enabled=1, or
	// BPF_ENABLE_STATS; Linux 5.8 and later): zero otherwise. The program
	// steers the group from this generation's Ready until the next
	// generation's; RunTime / Runs is what steering costs a datagram.
	Runs    uint64
	RunTime time.Duration
}

// Close closes the Transport and the socket, which leaves the group: packets
// of this generation's connections are dropped from then on. Call it once
// the connections have ended (or the drain timeout has passed).
func (s *Socket) Close() error {
	s.closeOnce.Do(func() {
		err1 := s.tr.Close()
		err2 := s.conn.Close()
		if errors.Is(err2, net.ErrClosed) {
			err2 = nil
		}
		s.st.close()
		s.closeErr = errors.Join(err1, err2)
	})
	return s.closeErr
}
