package quicsteer

// The connection IDs a generation issues carry its cookie, which the
// steering program reads from every packet's destination connection ID:
//
//	c[0]       slot (low 5 bits: 0..MaxGenerations-1), 3 random bits
//	c[1], c[2] check: c[1] = k_hi ^ c[0] ^ c[4] ^ c[6], c[2] = k_lo ^ c[3] ^ c[5] ^ c[7]
//	c[3..7]    random
//
// k is a 16-bit key drawn once per service (it lives in the steering's
// configuration map). The check tells the IDs this service issued from
// those a client chose for its first Initial packets but for 1 in 65,536 of
// the latter, whose Initial packets are then steered by the cookie only if
// its slot holds a socket (see steer_linux.go).

// CIDLen is the length of the connection IDs a generation issues.
const CIDLen = 8

// MaxGenerations is how many generations the cookie tells apart: the
// generations alive at once (one serving, the others draining) must number
// at most this many. Generation n uses slot Slot(n); a generation whose slot
// a generation MaxGenerations older still holds must not start.
const MaxGenerations = 32

// Slot returns the slot of generation n (1, 2, ...): (n-1) % MaxGenerations.
func Slot(n int) uint32 { return uint32((n - 1) % MaxGenerations) }

// EncodeCookie writes slot and the check bytes of key into c, a connection
// ID of CIDLen bytes whose bytes 0 and 3 to 7 are random already.
func EncodeCookie(c []byte, slot uint8, key uint16) {
	c[0] = c[0]&^(MaxGenerations-1) | slot&(MaxGenerations-1)
	c[1] = byte(key>>8) ^ c[0] ^ c[4] ^ c[6]
	c[2] = byte(key) ^ c[3] ^ c[5] ^ c[7]
}

// DecodeCookie returns the slot c carries, and whether c is a connection ID
// written with key at all.
func DecodeCookie(c []byte, key uint16) (uint8, bool) {
	if len(c) != CIDLen {
		return 0, false
	}
	if c[1] != byte(key>>8)^c[0]^c[4]^c[6] || c[2] != byte(key)^c[3]^c[5]^c[7] {
		return 0, false
	}
	return c[0] & (MaxGenerations - 1), true
}

// The variables handoff run sets for each generation of a program given a
// quic:// socket: EnvSlot, the generation's slot in decimal, and EnvKey, the
// service's key in 4 hexadecimal digits. The generation writes both into
// the connection IDs it issues (EncodeCookie).
const (
	EnvSlot = "HANDOFF_QUIC_SLOT"
	EnvKey  = "HANDOFF_QUIC_KEY"
)
