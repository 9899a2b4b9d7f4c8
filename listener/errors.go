package listener

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
	"unicode"
)

// ErrMalformed is wrapped by every error Parse returns (and so by Listen's
// for an address it cannot parse), inside an *Error that names the address
// and the forms it takes.
var ErrMalformed = errors.New("malformed address")

// Error describes why an address could not be parsed or opened.
type Error struct {
	// Addr is the address as the caller gave it.
	Addr string
	// Err is the cause; Unwrap returns it.
	Err error
	// Hint says how to fix the problem; it may be empty.
	Hint string
}

// Error returns one line: "listener: ADDR: CAUSE — HINT".
func (e *Error) Error() string {
	addr := e.Addr
	if addr == "" || strings.IndexFunc(addr, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		addr = strconv.Quote(addr)
	}
	msg := "listener: " + addr + ": " + short(e.Err)
	if e.Hint != "" {
		msg += " — " + e.Hint
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// short returns the errno text of err when it has one ("address already in
// use"), rather than the long chain of a *net.OpError.
func short(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
