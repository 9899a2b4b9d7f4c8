package quic

import (
	"crypto/rand"
	"fmt"

	quicgo "github.com/quic-go/quic-go"
)

// The connection IDs a generation issues carry its cookie, which the
// steering program reads from every packet's destination connection ID:
//
//	c[0]       slot (low 5 bits: 0..MaxGenerations-1), 3 random bits
//	c[1], c[2] check: c[1] = k_hi ^ c[0] ^ c[4] ^ c[6], c[2] = k_lo ^ c[3] ^ c[5] ^ c[7]
//	c[3..7]    random
//
// k is a 16-bit key drawn once per service (it lives in the steering's
// configuration map, passed on with it). The check tells the IDs this
// service issued from those a client chose for its first Initial packets
// but for 1 in 65,536 of the latter, whose Initial packets are then steered
// by the cookie only if its slot holds a socket (see steer_linux.go).

// CIDLen is the length of the connection IDs a generation issues.
const CIDLen = 8

// MaxGenerations is how many generations the cookie tells apart: the
// generations alive at once (one serving, the others draining) must number
// at most this many. Generation n uses slot (n-1) % MaxGenerations; Listen
// refuses a generation whose slot a generation MaxGenerations older still
// holds (see ErrTooManyGenerations).
const MaxGenerations = 32

// cidGenerator writes a generation's cookie into each connection ID.
type cidGenerator struct {
	slot uint8
	key  uint16
}

// GenerateConnectionID returns a new connection ID carrying the cookie.
func (g cidGenerator) GenerateConnectionID() (quicgo.ConnectionID, error) {
	var c [CIDLen]byte
	if _, err := rand.Read(c[:]); err != nil {
		return quicgo.ConnectionID{}, fmt.Errorf("quic: random connection ID: %w", err)
	}
	encodeCookie(c[:], g.slot, g.key)
	return quicgo.ConnectionIDFromBytes(c[:]), nil
}

// ConnectionIDLen returns CIDLen.
func (g cidGenerator) ConnectionIDLen() int { return CIDLen }

// encodeCookie writes slot and the check bytes into c, whose bytes 0 and 3
// to 7 are random already.
func encodeCookie(c []byte, slot uint8, key uint16) {
	c[0] = c[0]&^(MaxGenerations-1) | slot&(MaxGenerations-1)
	c[1] = byte(key>>8) ^ c[0] ^ c[4] ^ c[6]
	c[2] = byte(key) ^ c[3] ^ c[5] ^ c[7]
}

// decodeCookie returns the slot c carries, and whether c is a connection ID
// of this service (key) at all.
func decodeCookie(c []byte, key uint16) (uint8, bool) {
	if len(c) != CIDLen {
		return 0, false
	}
	if c[1] != byte(key>>8)^c[0]^c[4]^c[6] || c[2] != byte(key)^c[3]^c[5]^c[7] {
		return 0, false
	}
	return c[0] & (MaxGenerations - 1), true
}
