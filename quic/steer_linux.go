package quic

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The steering program runs for every datagram the kernel delivers to the
// SO_REUSEPORT group of the generations' sockets, and picks the socket with
// bpf_sk_select_reuseport from socks, a REUSEPORT_SOCKARRAY indexed by
// generation slot, or drops the datagram:
//
//   - shorter than minPayload bytes of UDP payload, or not QUIC (a short
//     header without the fixed bit, a long header of version 0, a connection
//     ID longer than 20 bytes, a Retry, an Initial in a datagram under 1200
//     bytes): dropped (verdictMalformed);
//   - short header: to the slot its destination connection ID names, if the
//     ID is one of this service's (see cid.go); an ID of another, or a slot
//     with no socket (the generation is gone): dropped;
//   - long header whose destination connection ID is one of this service's
//     and whose slot holds a socket (Handshake packets; the client's Initial
//     and 0-RTT packets once it knows the server's ID): to that slot;
//   - Handshake packets otherwise: dropped (their generation is gone);
//   - Initial and 0-RTT packets with the client's own connection ID, and
//     long headers of versions the server may negotiate: to the newest ready
//     generation (conf.Newest), or if its socket is gone (it died in its bake
//     window), to the one before it (conf.Previous); with neither, dropped.

// minPayload is the shortest UDP payload the program passes: a short header
// (1 byte), a connection ID (CIDLen), and the 4 + 16 bytes a packet must have
// past the packet number's offset for header protection's sample (RFC 9001
// 5.4.2). No QUIC packet of this service is shorter.
const minPayload = 1 + CIDLen + 20

// udpHeader is where the payload starts in what the program sees.
const udpHeader = 8

// Indices of the counters array, one count of datagrams per verdict.
const (
	verdictCookie    = iota // steered by the cookie in the connection ID
	verdictNewest           // Initial or 0-RTT, steered to the newest ready generation
	verdictMalformed        // dropped: too short, or not QUIC
	verdictGone             // dropped: the generation its connection ID names is gone
	verdictNoReady          // dropped: no generation is ready
	numVerdicts
)

// noSlot marks conf.Newest or conf.Previous unset.
const noSlot = math.MaxUint32

// confValue is the single value of the conf array, as the program reads it.
type confValue struct {
	Newest   uint32 // slot of the newest ready generation
	Previous uint32 // slot of the generation that started it
	Key      uint32 // the cookie's check key (16 bits)
}

// maps are the steering's kernel objects that outlive a generation.
type maps struct {
	socks    *ebpf.Map // REUSEPORT_SOCKARRAY: slot -> socket
	conf     *ebpf.Map // ARRAY of one confValue
	counters *ebpf.Map // PERCPU_ARRAY: verdict -> datagrams
}

func (m *maps) close() {
	for _, x := range []*ebpf.Map{m.socks, m.conf, m.counters} {
		if x != nil {
			x.Close()
		}
	}
}

// newMaps creates the maps of a service's first generation, with a new key
// and no generation ready.
func newMaps() (*maps, error) {
	m := &maps{}
	var err error
	m.socks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_socks", Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: MaxGenerations})
	if err != nil {
		return nil, fmt.Errorf("creating the REUSEPORT_SOCKARRAY map: %w", err)
	}
	m.conf, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_conf", Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1})
	if err != nil {
		m.close()
		return nil, fmt.Errorf("creating the configuration map: %w", err)
	}
	m.counters, err = ebpf.NewMap(&ebpf.MapSpec{Name: "handoff_counts", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numVerdicts})
	if err != nil {
		m.close()
		return nil, fmt.Errorf("creating the counters map: %w", err)
	}
	var k [2]byte
	if _, err := rand.Read(k[:]); err != nil {
		m.close()
		return nil, fmt.Errorf("drawing the cookie key: %w", err)
	}
	c := confValue{Newest: noSlot, Previous: noSlot, Key: uint32(binary.BigEndian.Uint16(k[:]))}
	if err := m.conf.Put(uint32(0), c); err != nil {
		m.close()
		return nil, fmt.Errorf("writing the configuration map: %w", err)
	}
	return m, nil
}

// readConf returns the conf map's value.
func (m *maps) readConf() (confValue, error) {
	var c confValue
	err := m.conf.Lookup(uint32(0), &c)
	return c, err
}

// counts returns the datagrams counted for each verdict, summed over CPUs.
func (m *maps) counts() ([numVerdicts]uint64, error) {
	var out [numVerdicts]uint64
	for i := range out {
		var per []uint64
		if err := m.counters.Lookup(uint32(i), &per); err != nil {
			return out, err
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// occupied reports whether slot holds a socket.
func (m *maps) occupied(slot uint32) (bool, error) {
	var cookie uint64
	err := m.socks.Lookup(slot, &cookie)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return false, nil
	}
	return false, err
}

// Stack layout of the program (offsets from R10).
const (
	stBuf   = -16 // the first 16 bytes of the UDP payload
	stKey   = -20 // a map key
	stCount = -24 // a counters key
)

// program returns the steering program for m.
func program(m *maps) asm.Instructions {
	b := &builder{}
	socks, conf, counters := m.socks.FD(), m.conf.FD(), m.counters.FD()

	b.emit(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 16, asm.Word), // sk_reuseport_md.len: UDP header and payload
		asm.JLT.Imm(asm.R7, udpHeader+minPayload, "malformed"),
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
	b.count(counters, verdictCookie, 1)

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
	b.count(counters, verdictCookie, 1)

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
		b.count(counters, verdictNewest, 1)
		b.label(next)
	}
	b.count(counters, verdictNoReady, 0)
	b.label("malformed")
	b.count(counters, verdictMalformed, 0)
	b.label("gone")
	b.count(counters, verdictGone, 0)
	b.label("noready")
	b.count(counters, verdictNoReady, 0)
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

// loadProgram loads the steering program for m into the kernel.
func loadProgram(m *maps) (*ebpf.Program, error) {
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
