//go:build linux

package quicsteer

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The steering program runs for every datagram the kernel delivers to the
// SO_REUSEPORT group of the generations' sockets, and picks the socket with
// bpf_sk_select_reuseport from socks, a REUSEPORT_SOCKARRAY indexed by
// generation slot, or drops the datagram:
//
//   - shorter than MinPayload bytes of UDP payload, or not QUIC (a short
//     header without the fixed bit, a long header of version 0, a connection
//     ID longer than 20 bytes, a Retry, an Initial in a datagram under 1200
//     bytes): dropped (VerdictMalformed);
//   - short header: to the slot its destination connection ID names, if the
//     ID is one of this service's (see cookie.go); an ID of another, or a
//     slot with no socket (the generation is gone): dropped;
//   - long header whose destination connection ID is one of this service's
//     and whose slot holds a socket (Handshake packets; the client's Initial
//     and 0-RTT packets once it knows the server's ID): to that slot;
//   - Handshake packets otherwise: dropped (their generation is gone);
//   - Initial and 0-RTT packets with the client's own connection ID, and
//     long headers of versions the server may negotiate: to the newest ready
//     generation (Conf.Newest), or if its socket is gone (it died in its bake
//     window), to the one before it (Conf.Previous); with neither, dropped.

// MinPayload is the shortest UDP payload the program passes: a short header
// (1 byte), a connection ID (CIDLen), and the 4 + 16 bytes a packet must have
// past the packet number's offset for header protection's sample (RFC 9001
// 5.4.2). No QUIC packet of this service is shorter.
const MinPayload = 1 + CIDLen + 20

// udpHeader is where the payload starts in what the program sees.
const udpHeader = 8

// Indices of the counters map, one count of datagrams per verdict.
const (
	VerdictCookie    = iota // steered by the cookie in the connection ID
	VerdictNewest           // Initial or 0-RTT, steered to the newest ready generation
	VerdictMalformed        // dropped: too short, or not QUIC
	VerdictGone             // dropped: the generation its connection ID names is gone
	VerdictNoReady          // dropped: no generation is ready
	NumVerdicts
)

// NoSlot marks Conf.Newest or Conf.Previous unset.
const NoSlot = math.MaxUint32

// Conf is the single value of the configuration map, as the program reads
// it.
type Conf struct {
	Newest   uint32 // slot of the newest ready generation, or NoSlot
	Previous uint32 // slot the program falls back to when Newest holds no socket, or NoSlot
	Key      uint32 // the cookie's check key (16 bits)
}

// Maps are the steering's kernel objects, which outlive a generation: the
// program reads them, and its users write Socks and Conf.
type Maps struct {
	Socks    *ebpf.Map // REUSEPORT_SOCKARRAY: slot -> socket
	Conf     *ebpf.Map // ARRAY of one Conf
	Counters *ebpf.Map // PERCPU_ARRAY: verdict -> datagrams
}

// Close closes the maps that are set; the kernel frees them once no
// descriptor and no program holds them.
func (m *Maps) Close() {
	for _, x := range []*ebpf.Map{m.Socks, m.Conf, m.Counters} {
		if x != nil {
			x.Close()
		}
	}
}

// NewMaps creates the maps of a service's first generation, with a new key
// and no generation ready. Its error, where the kernel or the process's
// privileges refuse, is worded by Explain.
func NewMaps() (*Maps, error) {
	m := &Maps{}
	var err error
	m.Socks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_socks", Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: MaxGenerations})
	if err != nil {
		return nil, fmt.Errorf("creating the REUSEPORT_SOCKARRAY map: %w", err)
	}
	m.Conf, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_conf", Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("creating the configuration map: %w", err)
	}
	m.Counters, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_counts", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: NumVerdicts})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("creating the counters map: %w", err)
	}
	var k [2]byte
	if _, err := rand.Read(k[:]); err != nil {
		m.Close()
		return nil, fmt.Errorf("drawing the cookie key: %w", err)
	}
	c := Conf{Newest: NoSlot, Previous: NoSlot, Key: uint32(binary.BigEndian.Uint16(k[:]))}
	if err := m.WriteConf(c); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// ReadConf returns the configuration map's value.
func (m *Maps) ReadConf() (Conf, error) {
	var c Conf
	if err := m.Conf.Lookup(uint32(0), &c); err != nil {
		return c, fmt.Errorf("reading the configuration map: %w", err)
	}
	return c, nil
}

// WriteConf replaces the configuration map's value: the program reads it
// from its next datagram on.
func (m *Maps) WriteConf(c Conf) error {
	if err := m.Conf.Put(uint32(0), c); err != nil {
		return fmt.Errorf("writing the configuration map: %w", err)
	}
	return nil
}

// Counts returns the datagrams counted for each verdict, summed over CPUs.
func (m *Maps) Counts() ([NumVerdicts]uint64, error) {
	var out [NumVerdicts]uint64
	for i := range out {
		var per []uint64
		if err := m.Counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("reading the counters: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// Occupied reports whether slot holds a socket. A socket leaves its slot
// when it is closed (its last descriptor, in any process), or by Remove.
func (m *Maps) Occupied(slot uint32) (bool, error) {
	var cookie uint64
	err := m.Socks.Lookup(slot, &cookie)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return false, nil
	}
	return false, fmt.Errorf("reading the socket map: %w", err)
}

// Put puts the UDP socket fd, bound with SO_REUSEPORT in the group, into
// slot: the program sends it the datagrams of the connection IDs that name
// slot from then on.
func (m *Maps) Put(slot uint32, fd int) error {
	if err := m.Socks.Update(slot, uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("putting the socket into slot %d: %w", slot, err)
	}
	return nil
}

// Remove empties slot; an empty slot is not an error.
func (m *Maps) Remove(slot uint32) error {
	if err := m.Socks.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("emptying slot %d: %w", slot, err)
	}
	return nil
}

// Attach attaches prog to the SO_REUSEPORT group of the UDP socket fd,
// replacing the program attached before, if any.
func Attach(fd int, prog *ebpf.Program) error {
	return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_EBPF", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD()))
}

// Explain words the error of creating the maps or loading the program for
// a reader who must fix it; it wraps err.
func Explain(err error) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("this process may not create BPF maps and programs (%w): run it as root, or give it CAP_BPF and CAP_NET_ADMIN (AmbientCapabilities=CAP_BPF CAP_NET_ADMIN in a systemd unit; CAP_SYS_ADMIN before Linux 5.8); uid %s", err, strconv.Itoa(os.Geteuid()))
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL):
		return fmt.Errorf("this kernel lacks BPF_MAP_TYPE_REUSEPORT_SOCKARRAY or BPF_PROG_TYPE_SK_REUSEPORT (%w): the steering needs Linux 4.19 or later with CONFIG_BPF_SYSCALL", err)
	}
	return err
}

// Stack layout of the program (offsets from R10).
const (
	stBuf   = -16 // the first 16 bytes of the UDP payload
	stKey   = -20 // a map key
	stCount = -24 // a counters key
)

// program returns the steering program for m.
func program(m *Maps) asm.Instructions {
	b := &builder{}
	socks, conf, counters := m.Socks.FD(), m.Conf.FD(), m.Counters.FD()

	b.emit(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 16, asm.Word), // sk_reuseport_md.len: UDP header and payload
		asm.JLT.Imm(asm.R7, udpHeader+MinPayload, "malformed"),
		// R9 = &conf[0]
		asm.StoreImm(asm.R10, stKey, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, conf),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "noready"),
		asm.Mov.Reg(asm.R9, asm.R0),
		// The first 16 bytes of payload onto the stack.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, udpHeader),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, stBuf),
		asm.Mov.Imm(asm.R4, 16),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "malformed"),
		asm.LoadMem(asm.R8, asm.R10, stBuf, asm.Byte),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.And.Imm(asm.R2, 0x80),
		asm.JNE.Imm(asm.R2, 0, "long"),
		// Short header: the fixed bit, then the cookie at byte 1.
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.And.Imm(asm.R2, 0x40),
		asm.JEq.Imm(asm.R2, 0, "malformed"),
	)
	b.cookie(stBuf+1, "malformed")
	b.selectKey(socks)
	b.emit(asm.JNE.Imm(asm.R0, 0, "gone"))
	b.count(counters, VerdictCookie, 1)

	// Long header: version (bytes 1-4), type, DCID length (byte 5).
	b.label("long")
	b.emit(
		asm.LoadMem(asm.R2, asm.R10, stBuf+1, asm.Byte),
		asm.LSh.Imm(asm.R2, 24),
		asm.LoadMem(asm.R3, asm.R10, stBuf+2, asm.Byte),
		asm.LSh.Imm(asm.R3, 16),
		asm.Or.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, asm.R10, stBuf+3, asm.Byte),
		asm.LSh.Imm(asm.R3, 8),
		asm.Or.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, asm.R10, stBuf+4, asm.Byte),
		asm.Or.Reg(asm.R2, asm.R3),
		asm.JEq.Imm(asm.R2, 0, "malformed"), // version negotiation: never to a server
		asm.RSh.Imm(asm.R8, 4),
		asm.And.Imm(asm.R8, 3),
		// QUIC v2 (RFC 9369) numbers the types one higher: Retry 0,
		// Initial 1, 0-RTT 2, Handshake 3. R8 becomes v1's: Initial 0,
		// 0-RTT 1, Handshake 2, Retry 3.
		asm.JNE.Imm(asm.R2, 0x6b3343cf, "typed"),
		asm.Add.Imm(asm.R8, 3),
		asm.And.Imm(asm.R8, 3),
	)
	b.label("typed")
	b.emit(
		asm.JEq.Imm(asm.R8, 3, "malformed"), // a Retry: never to a server
		asm.JNE.Imm(asm.R8, 0, "sized"),
		asm.JLT.Imm(asm.R7, udpHeader+1200, "malformed"), // RFC 9000 14.1
	)
	b.label("sized")
	b.emit(
		asm.LoadMem(asm.R2, asm.R10, stBuf+5, asm.Byte),
		asm.JGT.Imm(asm.R2, 20, "malformed"),
		asm.JNE.Imm(asm.R2, CIDLen, "bytype"),
	)
	b.cookie(stBuf+6, "bytype")
	b.selectKey(socks)
	b.emit(asm.JNE.Imm(asm.R0, 0, "bytype"))
	b.count(counters, VerdictCookie, 1)

	b.label("bytype")
	b.emit(asm.JEq.Imm(asm.R8, 2, "gone")) // a Handshake packet whose generation is gone
	for _, field := range []int16{0, 4} {  // conf.Newest, then conf.Previous
		b.emit(
			asm.LoadMem(asm.R2, asm.R9, field, asm.Word),
			asm.StoreMem(asm.R10, stKey, asm.R2, asm.Word),
		)
		b.selectKey(socks)
		next := fmt.Sprintf("newest%d", field)
		b.emit(asm.JNE.Imm(asm.R0, 0, next))
		b.count(counters, VerdictNewest, 1)
		b.label(next)
	}
	b.count(counters, VerdictNoReady, 0)
	b.label("malformed")
	b.count(counters, VerdictMalformed, 0)
	b.label("gone")
	b.count(counters, VerdictGone, 0)
	b.label("noready")
	b.count(counters, VerdictNoReady, 0)
	return b.insns
}

// builder assembles the program, putting each label on the next instruction.
type builder struct {
	insns   asm.Instructions
	pending string
	n       int
}

func (b *builder) emit(ins ...asm.Instruction) {
	for _, in := range ins {
		if b.pending != "" {
			in = in.WithSymbol(b.pending)
			b.pending = ""
		}
		b.insns = append(b.insns, in)
	}
}

// label names the next instruction.
func (b *builder) label(name string) {
	if b.pending != "" {
		b.emit(asm.Mov.Reg(asm.R6, asm.R6)) // two labels, one place
	}
	b.pending = name
}

// cookie checks the connection ID at stack offset at against the key in
// conf (R9), jumping to fail if it is not one of this service's; else it
// leaves the slot it names in the map key slot.
func (b *builder) cookie(at int16, fail string) {
	b.emit(
		asm.LoadMem(asm.R4, asm.R9, 8, asm.Word), // conf.Key
		// c[1] == k_hi ^ c[0] ^ c[4] ^ c[6]
		asm.Mov.Reg(asm.R2, asm.R4),
		asm.RSh.Imm(asm.R2, 8),
		asm.And.Imm(asm.R2, 0xff),
	)
	for _, i := range []int16{0, 4, 6} {
		b.emit(asm.LoadMem(asm.R3, asm.R10, at+i, asm.Byte), asm.Xor.Reg(asm.R2, asm.R3))
	}
	b.emit(
		asm.LoadMem(asm.R3, asm.R10, at+1, asm.Byte),
		asm.JNE.Reg(asm.R2, asm.R3, fail),
		// c[2] == k_lo ^ c[3] ^ c[5] ^ c[7]
		asm.Mov.Reg(asm.R2, asm.R4),
		asm.And.Imm(asm.R2, 0xff),
	)
	for _, i := range []int16{3, 5, 7} {
		b.emit(asm.LoadMem(asm.R3, asm.R10, at+i, asm.Byte), asm.Xor.Reg(asm.R2, asm.R3))
	}
	b.emit(
		asm.LoadMem(asm.R3, asm.R10, at+2, asm.Byte),
		asm.JNE.Reg(asm.R2, asm.R3, fail),
		asm.LoadMem(asm.R2, asm.R10, at, asm.Byte),
		asm.And.Imm(asm.R2, MaxGenerations-1),
		asm.StoreMem(asm.R10, stKey, asm.R2, asm.Word),
	)
}

// selectKey calls bpf_sk_select_reuseport with the key at stKey; R0 is 0
// when a socket was selected.
func (b *builder) selectKey(socks int) {
	b.emit(
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, stKey),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
	)
}

// count adds one to the counter of verdict v and returns verdict (1 pass:
// the selected socket gets the datagram; 0 drop).
func (b *builder) count(counters int, v int, verdict int32) {
	b.n++
	skip := fmt.Sprintf("counted%d", b.n)
	b.emit(
		asm.StoreImm(asm.R10, stCount, int64(v), asm.Word),
		asm.LoadMapPtr(asm.R1, counters),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stCount),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	b.label(skip)
	b.emit(asm.Mov.Imm(asm.R0, verdict), asm.Return())
}

// LoadProgram loads the steering program for m into the kernel; its error,
// where the kernel or the process's privileges refuse, is worded by Explain.
func LoadProgram(m *Maps) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "handoff_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		Instructions: program(m),
		License:      "BSD-3-Clause",
	})
	if err != nil {
		return nil, fmt.Errorf("loading the steering program: %w", err)
	}
	return p, nil
}
