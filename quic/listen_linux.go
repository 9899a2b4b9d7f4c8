package quic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/quicsteer"
	"github.com/handoff-dev/handoff/upgrader"
)

// steer is a generation's share of the steering; nil under handoff run,
// whose daemon holds the program and the maps.
type steer struct {
	maps *quicsteer.Maps
	prog *ebpf.Program
	slot uint32
	prev uint32 // the slot of the generation that started this one, or quicsteer.NoSlot
}

func (s *steer) close() {
	if s == nil {
		return
	}
	if s.prog != nil {
		s.prog.Close()
	}
	s.maps.Close()
}

// mapPrefix begins the registry names of the maps passed from generation to
// generation (see quicsteer.InheritMaps); v1 is the layout of the maps and
// of the cookie. A release that changes either must change it, and then
// starts a group of its own (its first generation cannot bind beside the old
// one's, which keep their own maps).
func mapPrefix(addr string) string { return "handoff-quic.v1:" + addr + ":" }

// Listen returns this generation's UDP socket for addr ("host:port", with a
// fixed port, the same in every generation), steered: it joins the
// SO_REUSEPORT group of the earlier generations' sockets for addr, takes
// the steering maps they passed on (or creates them in the first
// generation) and registers them with u for the next. The socket gets
// packets once u.Ready is called: then it takes its generation's slot in
// the map, becomes the newest ready generation, to which new connections
// go, and attaches this release's steering program to the group. Call it
// before Ready, once per address.
//
// It fails with an error wrapping ErrNoBPF, which names what is missing,
// where the kernel or the process's privileges do not allow the steering,
// and with one wrapping ErrTooManyGenerations when the generation
// MaxGenerations before this one still holds its slot.
//
// Under handoff run --listen quic://ADDR (the daemon), Listen returns
// FromHandoff(addr) instead: the daemon binds each generation's socket,
// holds the steering and puts the socket into its slot when the generation
// is ready (READY=1, which u.Ready sends); the program needs no privilege.
//
// It logs with slog.Default, one line per event: quic.listening when bound,
// quic.steered at Ready.
func Listen(u *upgrader.Upgrader, addr string) (*Socket, error) { return listen(u, addr) }

// host is what Listen needs of the Upgrader (a fake in tests).
type host interface {
	Generation() int
	HasParent() bool
	InheritedFile(name string) (*os.File, error)
	PassFile(name string, f *os.File) error
	OnReady(f func() error)
}

func listen(u host, addr string) (*Socket, error) {
	if underHandoff() {
		return FromHandoff(addr)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic: %s: %w", addr, err)
	}
	if ua.Port == 0 {
		return nil, fmt.Errorf("quic: %s: give a fixed port: every generation binds its own socket to the same address", addr)
	}
	m, err := takeMaps(u, addr)
	if err != nil {
		return nil, err
	}
	st := &steer{maps: m, slot: quicsteer.Slot(u.Generation()), prev: quicsteer.NoSlot}
	if u.HasParent() {
		st.prev = quicsteer.Slot(u.Generation() - 1)
	}
	if busy, err := m.Occupied(st.slot); err != nil {
		st.close()
		return nil, fmt.Errorf("quic: %s: %w", addr, err)
	} else if busy {
		st.close()
		return nil, fmt.Errorf("%w: generation %d would take slot %d, which generation %d (%d before it) still holds while it drains; upgrade again once it has exited",
			ErrTooManyGenerations, u.Generation(), st.slot, u.Generation()-MaxGenerations, MaxGenerations)
	}
	if st.prog, err = quicsteer.LoadProgram(m); err != nil {
		st.close()
		return nil, fmt.Errorf("%w: %s: %w", ErrNoBPF, addr, quicsteer.Explain(err))
	}
	c, err := m.ReadConf()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("quic: %s: %w", addr, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("quic: %s: binding this generation's socket (the earlier ones' must be bound with SO_REUSEPORT, by this package, as the same user): %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	cids := cidGenerator{slot: uint8(st.slot), key: uint16(c.Key)}
	s := &Socket{conn: conn, cids: cids, st: st}
	s.tr = &quicgo.Transport{Conn: conn, ConnectionIDGenerator: cids}
	log := slog.Default().With("gen", u.Generation(), "pid", os.Getpid())
	u.OnReady(func() error {
		if err := s.activate(); err != nil {
			return fmt.Errorf("quic: %s: %w", addr, err)
		}
		log.Info("QUIC socket steered: new connections come to this generation", "event", "quic.steered", "addr", addr, "slot", st.slot, "previous_slot", int64(int32(st.prev)))
		return nil
	})
	log.Info("QUIC socket bound; it gets packets from Ready on", "event", "quic.listening", "addr", addr, "local", conn.LocalAddr().String(), "slot", st.slot)
	return s, nil
}

// activate puts the socket into its slot, makes this generation the newest
// ready one, and attaches its program to the group.
func (s *Socket) activate() error {
	st := s.st
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	err = rc.Control(func(fd uintptr) {
		if aerr = st.maps.Put(st.slot, int(fd)); aerr != nil {
			return
		}
		c, err := st.maps.ReadConf()
		if err != nil {
			aerr = err
			return
		}
		c.Previous, c.Newest = st.prev, st.slot
		if c.Previous == quicsteer.NoSlot {
			c.Previous = st.slot
		}
		if aerr = st.maps.WriteConf(c); aerr != nil {
			return
		}
		aerr = quicsteer.Attach(int(fd), st.prog)
	})
	if err != nil {
		return err
	}
	return aerr
}

// Stats returns the steering program's counts for the whole service, and
// the kernel's statistics of this generation's program. Under handoff run
// the daemon holds them: Stats returns an error wrapping
// errors.ErrUnsupported.
func (s *Socket) Stats() (Stats, error) {
	if s.st == nil {
		return Stats{}, fmt.Errorf("quic: the steering's counters are handoff run's, not this program's: %w", errors.ErrUnsupported)
	}
	c, err := s.st.maps.Counts()
	if err != nil {
		return Stats{}, fmt.Errorf("quic: %w", err)
	}
	st := Stats{ByCookie: c[quicsteer.VerdictCookie], ToNewest: c[quicsteer.VerdictNewest], Malformed: c[quicsteer.VerdictMalformed], Gone: c[quicsteer.VerdictGone], NoReady: c[quicsteer.VerdictNoReady]}
	ps, err := s.st.prog.Stats()
	if err != nil {
		return st, fmt.Errorf("quic: reading the program's run statistics: %w", err)
	}
	st.Runs, st.RunTime = ps.RunCount, ps.Runtime
	return st, nil
}

// takeMaps returns the maps the previous generation passed for addr, or new
// ones, registered with u for the next generation either way.
func takeMaps(u host, addr string) (*quicsteer.Maps, error) {
	prefix := mapPrefix(addr)
	m, err := quicsteer.InheritMaps(u, prefix)
	if err != nil {
		return nil, fmt.Errorf("quic: %s: %w", addr, err)
	}
	if m == nil {
		_ = rlimit.RemoveMemlock() // kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK
		if m, err = quicsteer.NewMaps(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrNoBPF, addr, quicsteer.Explain(err))
		}
	}
	if err := quicsteer.PassMaps(u, prefix, m); err != nil {
		m.Close()
		return nil, fmt.Errorf("quic: %s: %w", addr, err)
	}
	return m, nil
}
