//go:build linux

// Package quicgroup keeps `handoff run`'s QUIC sockets (--listen
// quic://HOST:PORT), where each generation needs a UDP socket of its own:
// two processes reading one UDP socket would split its datagrams, and with
// them every QUIC connection, at random.
//
// Each generation gets a UDP socket of its own, bound by handoff with
// SO_REUSEPORT into one group per address; handoff holds the group's steering (package quicsteer): the
// program, attached through an anchor socket of handoff's own that is never
// in the map, and the maps. A generation's socket enters the map at its
// slot when the generation is ready, and it becomes the newest, to which
// Initial packets go; it leaves when the generation's process closes it
// (the kernel empties the slot as the socket's last descriptor closes:
// handoff closes its copy once the socket is in the map) and at its exit.
// The program learns its slot and the key from $HANDOFF_QUIC_SLOT and
// $HANDOFF_QUIC_KEY; module quic's Listen (FromHandoff) reads them.
package quicgroup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/sockets"
	"github.com/handoff-dev/handoff/internal/quicsteer"
	"github.com/handoff-dev/handoff/upgrader"
)

// Groups is what handoff keeps of its QUIC sockets, one group per
// address. A nil *Groups has none: Spawn passes the sockets as they are,
// and NotStarted and Event do nothing. A Groups is used from one goroutine.
type Groups struct {
	log   *slog.Logger
	key   uint16
	socks []*quicSock
	gens  map[*gen.Gen]*quicGen // spawned, not yet exited
	ready []*quicGen            // those whose sockets are in the maps, in the order they became ready
}

// quicSock is one --listen quic:// address.
type quicSock struct {
	idx    int // among the descriptors passed
	addr   *net.UDPAddr
	maps   *quicsteer.Maps
	prog   *ebpf.Program
	anchor *net.UDPConn
}

// quicGen is one generation's share: its slot, and per quicSock its socket
// (handoff's copy, until it is in the map) and the socket's cookie.
type quicGen struct {
	n       int
	slot    uint32
	files   []*os.File
	cookies []uint64
}

// quicMapPrefix begins the names of the maps passed to a new handoff
// (SIGUSR2); v1 is the layout of the maps and of the cookie, as module
// quic's.
func quicMapPrefix(addr string) string { return "handoff-run-quic.v1:" + addr + ":" }

// New returns a Groups with no socket yet, which logs to log.
func New(log *slog.Logger) *Groups {
	return &Groups{log: log, gens: map[*gen.Gen]*quicGen{}}
}

// Open opens l's group: the maps (those an old handoff passed on
// SIGUSR2, else new ones), the program, and the anchor socket bound to l's
// address, with the program attached. It returns a descriptor of the
// anchor for the socket's place in LISTEN_FDS (each generation gets its
// own socket there instead) and the anchor itself.
// idx is the socket's place among the descriptors passed (from 0).
func (qs *Groups) Open(u *upgrader.Upgrader, l config.Listen, idx int) (*os.File, io.Closer, error) {
	fail := func(err error) (*os.File, io.Closer, error) {
		return nil, nil, fmt.Errorf("handoff run: --listen %s: %w", l, err)
	}
	ua, err := net.ResolveUDPAddr(l.Addr.Network, l.Addr.Address)
	if err != nil {
		return fail(err)
	}
	_ = rlimit.RemoveMemlock() // kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK
	m, err := quicMaps(u, l.Addr.Address)
	if err != nil {
		return fail(err)
	}
	q := &quicSock{idx: idx, maps: m}
	if q.prog, err = quicsteer.LoadProgram(m); err != nil {
		m.Close()
		return fail(fmt.Errorf("QUIC's steering needs BPF: %w — or use udp://, one socket shared by every generation, which breaks QUIC connections at each reload", quicsteer.Explain(err)))
	}
	if q.anchor, err = listenReusePort(ua); err != nil {
		q.close()
		return fail(err)
	}
	q.addr = q.anchor.LocalAddr().(*net.UDPAddr)
	if err := withFD(q.anchor, func(fd int) error { return quicsteer.Attach(fd, q.prog) }); err != nil {
		q.close()
		return fail(err)
	}
	c, err := m.ReadConf()
	if err != nil {
		q.close()
		return fail(err)
	}
	if len(qs.socks) == 0 {
		qs.key = uint16(c.Key)
	} else if uint16(c.Key) != qs.key {
		c.Key = uint32(qs.key) // one key for all of handoff's QUIC sockets
		if err := m.WriteConf(c); err != nil {
			q.close()
			return fail(err)
		}
	}
	qs.socks = append(qs.socks, q)
	f, err := sockets.Passable(q.anchor, l.Addr.String())
	if err != nil {
		q.close()
		return fail(err)
	}
	qs.log.Info("QUIC socket steered by handoff: each generation gets its own", "event", "quic.listening", "addr", "quic://"+q.addr.String(), "key", fmt.Sprintf("%04x", qs.key))
	return f, q.anchor, nil
}

// quicMaps returns the maps an old handoff passed for addr (SIGUSR2), or
// new ones; either way registered with u for the next handoff.
func quicMaps(u *upgrader.Upgrader, addr string) (*quicsteer.Maps, error) {
	prefix := quicMapPrefix(addr)
	m, err := quicsteer.InheritMaps(u, prefix)
	if err != nil {
		return nil, err
	}
	if m == nil {
		if m, err = quicsteer.NewMaps(); err != nil {
			return nil, fmt.Errorf("QUIC's steering needs BPF: %w — or use udp://, one socket shared by every generation, which breaks QUIC connections at each reload", quicsteer.Explain(err))
		}
	}
	if err := quicsteer.PassMaps(u, prefix, m); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (q *quicSock) close() {
	if q.anchor != nil {
		q.anchor.Close()
	}
	if q.prog != nil {
		q.prog.Close()
	}
	q.maps.Close()
}

// listenReusePort binds a UDP socket to a with SO_REUSEPORT, into the group
// of the sockets bound so before.
func listenReusePort(a *net.UDPAddr) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", a.String())
	if err != nil {
		return nil, fmt.Errorf("binding a QUIC socket (another process holds the port without SO_REUSEPORT, or as another user): %w", err)
	}
	return pc.(*net.UDPConn), nil
}

// withFD calls f with c's descriptor.
func withFD(c syscall.Conn, f func(fd int) error) error {
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

// Spawn prepares g's QUIC sockets: it returns the files to pass (files,
// the sockets handoff passes, with each QUIC socket's place taken by a
// socket of g's own) and the variables that tell g its slot and key. It
// refuses g, so that the reload fails and the serving generation serves on,
// when the generation quicsteer.MaxGenerations before it still holds g's
// slot (draining). Each process of g that Spawn prepared is either started,
// and then told to Event (EvReady, EvExited), or given to NotStarted.
func (qs *Groups) Spawn(g *gen.Gen, files []*os.File) ([]*os.File, []string, error) {
	if qs == nil {
		return files, nil, nil
	}
	slot := quicsteer.Slot(g.N)
	for _, o := range qs.gens {
		if o.slot == slot {
			return nil, nil, fmt.Errorf("generation %d: its QUIC slot %d is still held by generation %d, which is %d generations older and has not exited (draining): QUIC connection IDs tell %d generations apart — reload again once it has exited, or give it a shorter --drain-timeout",
				g.N, slot, o.n, g.N-o.n, quicsteer.MaxGenerations)
		}
	}
	qg := &quicGen{n: g.N, slot: slot}
	files = slices.Clone(files)
	for _, q := range qs.socks {
		if busy, err := q.maps.Occupied(slot); err != nil {
			qg.close()
			return nil, nil, fmt.Errorf("generation %d: %w", g.N, err)
		} else if busy {
			qg.close()
			return nil, nil, fmt.Errorf("generation %d: its QUIC slot %d still holds the socket of a generation %d older (an old handoff's, draining): reload again once it has exited", g.N, slot, quicsteer.MaxGenerations)
		}
		c, err := listenReusePort(q.addr)
		if err != nil {
			qg.close()
			return nil, nil, fmt.Errorf("generation %d: %w", g.N, err)
		}
		var cookie uint64
		err = withFD(c, func(fd int) error {
			var err error
			cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			return os.NewSyscallError("getsockopt SO_COOKIE", err)
		})
		var f *os.File
		if err == nil {
			f, err = sockets.Passable(c, files[q.idx].Name())
		}
		c.Close()
		if err != nil {
			qg.close()
			return nil, nil, fmt.Errorf("generation %d: its QUIC socket: %w", g.N, err)
		}
		qg.files = append(qg.files, f)
		qg.cookies = append(qg.cookies, cookie)
		files[q.idx] = f
	}
	qs.gens[g] = qg
	env := []string{quicsteer.EnvSlot + "=" + strconv.Itoa(int(slot)), quicsteer.EnvKey + "=" + fmt.Sprintf("%04x", qs.key)}
	return files, env, nil
}

// NotStarted forgets g, whose process did not start.
func (qs *Groups) NotStarted(g *gen.Gen) {
	if qs == nil {
		return
	}
	if qg := qs.gens[g]; qg != nil {
		qg.close()
		delete(qs.gens, g)
	}
}

func (qg *quicGen) close() {
	for _, f := range qg.files {
		if f != nil {
			f.Close()
		}
	}
	qg.files = nil
}

// Event carries out, for the QUIC sockets, what ev means, before the
// machine steps with it: a generation ready gets its sockets steered (new
// QUIC connections go to it); one that exited has them taken out.
func (qs *Groups) Event(ev gen.Event) {
	if qs == nil {
		return
	}
	switch e := ev.(type) {
	case gen.EvReady:
		qs.quicReady(e.G)
	case gen.EvExited:
		qs.quicExited(e.G)
	}
}

// quicReady puts g's sockets into their slot and makes g the newest ready
// generation, to which new connections go; then closes handoff's copies,
// so that the kernel empties the slot when g's process closes its socket.
func (qs *Groups) quicReady(mg *gen.Gen) {
	qg := qs.gens[mg]
	if qg == nil || qg.files == nil {
		return
	}
	for i, q := range qs.socks {
		// Through SyscallConn: File.Fd could make the socket, whose flags
		// the generation shares, blocking.
		if err := withFD(qg.files[i], func(fd int) error { return q.maps.Put(qg.slot, fd) }); err != nil {
			qs.log.Error("QUIC socket not steered: this generation gets no QUIC packets", "event", "quic.steer_failed", "gen", qg.n, "addr", "quic://"+q.addr.String(), "slot", qg.slot, "err", err)
		}
	}
	qg.close()
	qs.ready = append(qs.ready, qg)
	qs.quicWriteConf()
	qs.log.Info("QUIC sockets steered: new connections come to this generation", "event", "quic.steered", "gen", qg.n, "gen_pid", mg.PID, "slot", qg.slot)
}

// quicExited takes g's sockets out of the maps (the kernel did when its
// process closed them, unless another process holds them still) and makes
// the newest generation still ready the newest again.
func (qs *Groups) quicExited(mg *gen.Gen) {
	qg := qs.gens[mg]
	if qg == nil {
		return
	}
	delete(qs.gens, mg)
	qg.close()
	if i := slices.Index(qs.ready, qg); i >= 0 {
		qs.ready = slices.Delete(qs.ready, i, i+1)
		for j, q := range qs.socks {
			var cookie uint64
			if err := q.maps.Socks.Lookup(qg.slot, &cookie); err == nil && cookie == qg.cookies[j] {
				if err := q.maps.Remove(qg.slot); err != nil {
					qs.log.Warn("QUIC socket of an exited generation left in the map", "event", "quic.remove_failed", "gen", qg.n, "slot", qg.slot, "err", err)
				}
			}
		}
		qs.quicWriteConf()
	}
	args := []any{"event", "quic.left", "gen", qg.n, "gen_pid", mg.PID, "slot", qg.slot}
	if c, err := qs.socks[0].maps.Counts(); err == nil {
		args = append(args, "by_cookie", c[quicsteer.VerdictCookie], "to_newest", c[quicsteer.VerdictNewest], "malformed", c[quicsteer.VerdictMalformed],
			"gone", c[quicsteer.VerdictGone], "no_ready", c[quicsteer.VerdictNoReady])
	}
	qs.log.Info("QUIC sockets of an exited generation out of the steering", args...)
}

// quicWriteConf points the steering's Initial packets at the newest ready
// generation, and at the one ready before it should its socket be gone.
func (qs *Groups) quicWriteConf() {
	newest, prev := uint32(quicsteer.NoSlot), uint32(quicsteer.NoSlot)
	if n := len(qs.ready); n > 0 {
		newest, prev = qs.ready[n-1].slot, qs.ready[n-1].slot
		if n > 1 {
			prev = qs.ready[n-2].slot
		}
	}
	for _, q := range qs.socks {
		c, err := q.maps.ReadConf()
		if err == nil {
			if newest == quicsteer.NoSlot {
				// None of this handoff's is ready: an old handoff's
				// (SIGUSR2) may be; the program checks its socket.
				continue
			}
			p := prev
			if len(qs.ready) == 1 && c.Newest != quicsteer.NoSlot && c.Newest != newest {
				p = c.Newest // an old handoff's (SIGUSR2), or one gone
			}
			c.Newest, c.Previous = newest, p
			err = q.maps.WriteConf(c)
		}
		if err != nil {
			qs.log.Error("QUIC steering not updated: new connections may go to an older generation", "event", "quic.steer_failed", "addr", "quic://"+q.addr.String(), "err", err)
		}
	}
}
