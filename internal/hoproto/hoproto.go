// Package hoproto encodes the messages of version 2 of the handover
// channel (package upgrader documents the channel): a pack of connections
// offered in one message, 'J', and a pack of answers, 'A'. Version 1's
// messages, one connection or one answer each, are upgrader's own.
//
//	'J' COUNT (ID STATELEN UNREADLEN STATE UNREAD)...   COUNT connections, their descriptors attached in order
//	'A' COUNT (ID KIND REASONLEN REASON)...              answers: KIND 'P' prepared, 'R' refused
//
// COUNT and REASONLEN are uint16, ID a uint64, STATELEN and UNREADLEN
// uint32, all little-endian. A sender packs at most PackMax connections,
// PackBytes bytes in all, and answers with an 'A' only the connections of
// a 'J', once all of them are answered.
package hoproto

import (
	"encoding/binary"
	"errors"
)

const (
	// Version is the version of the channel's format that this package
	// speaks, which a new generation says in its hello.
	Version = 2
	// PackMax is the most connections in one 'J', and so answers in one
	// 'A'. Eight descriptors are what every reader of version 1 has room
	// for (handoff's relay among them): a 'J' passes through an older
	// handoff whole.
	PackMax = 8
	// PackBytes bounds a 'J': a connection whose state and unread bytes
	// would take it past goes alone, in version 1's 'I'.
	PackBytes = 16 << 10
	// ReasonMax bounds a refusal's reason in an 'A', so that a pack of
	// answers fits the 4 KiB the old side reads at once.
	ReasonMax = 400
)

// ItemSize is the size of one connection's entry in a 'J'.
func ItemSize(state, unread []byte) int { return 16 + len(state) + len(unread) }

// Pack is a 'J' being built.
type Pack struct{ b []byte }

// Reset empties p, ready for its first item.
func (p *Pack) Reset() { p.b = append(p.b[:0], 'J', 0, 0) }

// Len is the number of connections in p.
func (p *Pack) Len() int { return int(binary.LittleEndian.Uint16(p.b[1:3])) }

// Size is the size of p's message so far.
func (p *Pack) Size() int { return len(p.b) }

// Add appends one connection's entry.
func (p *Pack) Add(id uint64, state, unread []byte) {
	p.b = binary.LittleEndian.AppendUint64(p.b, id)
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(state)))
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(unread)))
	p.b = append(append(p.b, state...), unread...)
	binary.LittleEndian.PutUint16(p.b[1:3], uint16(p.Len()+1))
}

// Bytes returns the message.
func (p *Pack) Bytes() []byte { return p.b }

// Item is one connection of a 'J'. State and Unread share the message's
// memory.
type Item struct {
	ID            uint64
	State, Unread []byte
}

var errMalformed = errors.New("a malformed handover message")

// ParsePack returns the connections of the 'J' msg, in order.
func ParsePack(msg []byte) ([]Item, error) {
	if len(msg) < 3 || msg[0] != 'J' {
		return nil, errMalformed
	}
	n := int(binary.LittleEndian.Uint16(msg[1:3]))
	if n > PackMax {
		return nil, errMalformed
	}
	items := make([]Item, 0, n)
	b := msg[3:]
	for range n {
		if len(b) < 16 {
			return nil, errMalformed
		}
		id := binary.LittleEndian.Uint64(b)
		sl, ul := int(binary.LittleEndian.Uint32(b[8:])), int(binary.LittleEndian.Uint32(b[12:]))
		b = b[16:]
		if sl < 0 || ul < 0 || sl > len(b) || ul > len(b)-sl {
			return nil, errMalformed
		}
		items = append(items, Item{ID: id, State: b[:sl], Unread: b[sl : sl+ul]})
		b = b[sl+ul:]
	}
	if len(b) != 0 {
		return nil, errMalformed
	}
	return items, nil
}

// Answers is an 'A' being built.
type Answers struct{ b []byte }

// Reset empties a.
func (a *Answers) Reset() { a.b = append(a.b[:0], 'A', 0, 0) }

// Len is the number of answers in a.
func (a *Answers) Len() int { return int(binary.LittleEndian.Uint16(a.b[1:3])) }

// Add appends the answer for connection id: prepared if reason is "",
// else refused, for reason (cut to ReasonMax bytes).
func (a *Answers) Add(id uint64, reason string) {
	kind := byte('P')
	if reason != "" {
		kind = 'R'
	}
	if len(reason) > ReasonMax {
		reason = reason[:ReasonMax]
	}
	a.b = binary.LittleEndian.AppendUint64(a.b, id)
	a.b = append(a.b, kind)
	a.b = binary.LittleEndian.AppendUint16(a.b, uint16(len(reason)))
	a.b = append(a.b, reason...)
	binary.LittleEndian.PutUint16(a.b[1:3], uint16(a.Len()+1))
}

// Bytes returns the message.
func (a *Answers) Bytes() []byte { return a.b }

// Answer is one answer of an 'A'.
type Answer struct {
	ID     uint64
	Reason string // "" if prepared
}

// ParseAnswers returns the answers of the 'A' msg, in order.
func ParseAnswers(msg []byte) ([]Answer, error) {
	if len(msg) < 3 || msg[0] != 'A' {
		return nil, errMalformed
	}
	n := int(binary.LittleEndian.Uint16(msg[1:3]))
	if n > PackMax {
		return nil, errMalformed
	}
	out := make([]Answer, 0, n)
	b := msg[3:]
	for range n {
		if len(b) < 11 {
			return nil, errMalformed
		}
		a := Answer{ID: binary.LittleEndian.Uint64(b)}
		kind, rl := b[8], int(binary.LittleEndian.Uint16(b[9:]))
		b = b[11:]
		if rl > len(b) || kind != 'P' && kind != 'R' || kind == 'R' && rl == 0 {
			return nil, errMalformed
		}
		if kind == 'R' {
			a.Reason = string(b[:rl])
		}
		b = b[rl:]
		out = append(out, a)
	}
	if len(b) != 0 {
		return nil, errMalformed
	}
	return out, nil
}

// PackLen returns the number of connections a 'J' says it holds, at most
// PackMax, without parsing it whole (handoff's relay counts with it).
func PackLen(msg []byte) int {
	if len(msg) < 3 {
		return 0
	}
	return min(int(binary.LittleEndian.Uint16(msg[1:3])), PackMax)
}

// Refusals returns how many answers of the 'A' msg are refusals, 0 if it
// is malformed.
func Refusals(msg []byte) int {
	as, err := ParseAnswers(msg)
	if err != nil {
		return 0
	}
	n := 0
	for _, a := range as {
		if a.Reason != "" {
			n++
		}
	}
	return n
}
