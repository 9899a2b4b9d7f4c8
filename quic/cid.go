package quic

import (
	"crypto/rand"
	"fmt"

	quicgo "github.com/quic-go/quic-go"

	"github.com/handoff-dev/handoff/internal/quicsteer"
)

// The connection IDs a generation issues carry its cookie, which the
// steering program reads from every packet's destination connection ID:
// its slot and a check under the service's key (see package
// internal/quicsteer, which holds the program and the encoding).

// CIDLen is the length of the connection IDs a generation issues.
const CIDLen = quicsteer.CIDLen

// MaxGenerations is how many generations the cookie tells apart: the
// generations alive at once (one serving, the others draining) must number
// at most this many. Generation n uses slot (n-1) % MaxGenerations; Listen
// refuses a generation whose slot a generation MaxGenerations older still
// holds (see ErrTooManyGenerations).
const MaxGenerations = quicsteer.MaxGenerations

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
	quicsteer.EncodeCookie(c[:], g.slot, g.key)
	return quicgo.ConnectionIDFromBytes(c[:]), nil
}

// ConnectionIDLen returns CIDLen.
func (g cidGenerator) ConnectionIDLen() int { return CIDLen }
