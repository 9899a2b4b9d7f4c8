//go:build linux

package outtag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// JournalSocket is where journald takes entries in its native protocol.
const JournalSocket = "/run/systemd/journal/socket"

// Journal is a connection to journald's native protocol socket: each entry
// is one datagram of fields, NAME=value lines, or, for a value holding a
// newline, NAME, a newline, the value's length as 64 bits little-endian,
// the value and a newline. An entry larger than the socket takes in one
// datagram (about 208 KiB by default; a line is at most MaxLine) is written
// to a sealed memfd, and the memfd sent instead, as sd_journal_sendv does.
//
// When journald restarts, its socket is a new one at the same path and the
// connection still names the old one: the first entry refused so connects
// again, once, and is sent on the new connection.
type Journal struct {
	path string
	mu   sync.Mutex // guards conn
	conn *net.UnixConn
}

// OpenJournal connects to journald's socket at path (JournalSocket). It
// fails when nothing listens there: no journald, or not in this mount
// namespace.
func OpenJournal(path string) (*Journal, error) {
	c, err := dialJournal(path)
	if err != nil {
		return nil, err
	}
	return &Journal{path: path, conn: c}, nil
}

func dialJournal(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("outtag: journal: %w", err)
	}
	return c, nil
}

// Close closes the connection.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.conn.Close()
}

// send sends one entry; if journald's end of the connection is gone, it
// connects again and sends it once more.
func (j *Journal) send(entry []byte) error {
	j.mu.Lock()
	c := j.conn
	j.mu.Unlock()
	err := sendEntry(c, entry)
	if err == nil {
		return nil
	}
	j.mu.Lock()
	if j.conn != c {
		// Another sender connected again meanwhile and closed c under
		// this one (net.ErrClosed): send on the new connection.
		c = j.conn
		j.mu.Unlock()
		return sendEntry(c, entry)
	}
	if !peerGone(err) {
		j.mu.Unlock()
		return err
	}
	nc, derr := dialJournal(j.path)
	if derr != nil {
		j.mu.Unlock()
		return fmt.Errorf("%w; connecting again: %w", err, derr)
	}
	c.Close()
	j.conn = nc
	j.mu.Unlock()
	return sendEntry(nc, entry)
}

// peerGone reports whether err says the socket the connection names is
// closed: journald stopped or restarted.
func peerGone(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTCONN) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// sendEntry sends one entry on c.
func sendEntry(c *net.UnixConn, entry []byte) error {
	_, err := c.Write(entry)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("outtag: journal: %w", err)
	}
	fd, err := unix.MemfdCreate("handoff-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("outtag: journal: %w", os.NewSyscallError("memfd_create", err))
	}
	f := os.NewFile(uintptr(fd), "handoff-journal")
	defer f.Close()
	if _, err := f.Write(entry); err != nil {
		return fmt.Errorf("outtag: journal: %w", err)
	}
	// journald takes a memfd only sealed: nobody may change it after.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("outtag: journal: %w", os.NewSyscallError("fcntl F_ADD_SEALS", err))
	}
	// Alone in an empty datagram: net refuses WriteMsgUnix on a connected
	// datagram socket, so sendmsg(2) itself.
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("outtag: journal: %w", err)
	}
	oob := unix.UnixRights(int(f.Fd()))
	var serr error
	if err := rc.Write(func(s uintptr) bool {
		serr = unix.Sendmsg(int(s), nil, oob, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return fmt.Errorf("outtag: journal: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("outtag: journal: %w", os.NewSyscallError("sendmsg", serr))
	}
	return nil
}

// IsJournalStream reports whether f — handoff's stdout or stderr — is the
// stream systemd connected to the journal, which $JOURNAL_STREAM names by
// its device and inode ("DEV:INODE"). It is false without $JOURNAL_STREAM,
// and for a stream redirected since (a shell's 2>file, a pipe to a logger).
func IsJournalStream(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Dev == d && st.Ino == i
}

// journalFields returns the fields of t's entries besides MESSAGE,
// PRIORITY and HANDOFF_LINE_BREAK.
func journalFields(t Tags, stream string) []byte {
	var b []byte
	if t.Ident != "" {
		b = appendField(b, "SYSLOG_IDENTIFIER", []byte(t.Ident))
	}
	pid := []byte(strconv.Itoa(t.PID))
	b = appendField(b, "SYSLOG_PID", pid)
	b = appendField(b, "HANDOFF_GENERATION", []byte(strconv.Itoa(t.Gen)))
	b = appendField(b, "HANDOFF_WORKER", []byte(strconv.Itoa(t.Worker)))
	b = appendField(b, "HANDOFF_PID", pid)
	return appendField(b, "HANDOFF_STREAM", []byte(stream))
}

// appendEntry appends the entry of msg, a line or a piece of one (brk not
// "", see Source.line), with fields. At the start of a line, a priority
// prefix "<N>" (0 to 7) is taken off and made PRIORITY, as journald does
// with a program's stdout (SyslogLevelPrefix=, on by default); PRIORITY is
// otherwise 6, info, journald's default for stdout and stderr alike.
func appendEntry(dst, msg, fields []byte, start bool, brk string) []byte {
	prio := byte('6')
	if start && len(msg) >= 3 && msg[0] == '<' && msg[1] >= '0' && msg[1] <= '7' && msg[2] == '>' {
		prio, msg = msg[1], msg[3:]
	}
	dst = appendField(dst, "MESSAGE", msg)
	dst = append(dst, "PRIORITY="...)
	dst = append(dst, prio, '\n')
	dst = append(dst, fields...)
	if brk != "" {
		dst = appendField(dst, "HANDOFF_LINE_BREAK", []byte(brk))
	}
	return dst
}

// appendField appends the field name=value, in the binary-safe form when
// value holds a newline.
func appendField(dst []byte, name string, value []byte) []byte {
	dst = append(dst, name...)
	if bytes.IndexByte(value, '\n') < 0 {
		dst = append(dst, '=')
		dst = append(dst, value...)
		return append(dst, '\n')
	}
	dst = append(dst, '\n')
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(value)))
	dst = append(dst, value...)
	return append(dst, '\n')
}
