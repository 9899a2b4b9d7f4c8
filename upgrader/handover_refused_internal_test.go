//go:build linux

package upgrader

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The new generation's count of refused connections includes those refused
// after the last commit: the previous generation ended the channel without
// committing again (it gave up, or died), and keeps them.
func TestRefusedAfterLastCommitCounted(t *testing.T) {
	parent, u, h := newSide(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	offer := func(id uint64, state string) {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		msg := make([]byte, 13+len(state))
		msg[0] = 'I'
		binary.LittleEndian.PutUint64(msg[1:9], id)
		binary.LittleEndian.PutUint32(msg[9:13], uint32(len(state)))
		copy(msg[13:], state)
		if _, _, err := parent.WriteMsgUnix(msg, unix.UnixRights(int(f.Fd())), nil); err != nil {
			t.Fatal(err)
		}
	}
	answer := func() (byte, uint64) {
		t.Helper()
		_ = parent.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 512)
		n, err := parent.Read(b)
		if err != nil || n < 9 {
			t.Fatalf("reading an answer: %d bytes, %v", n, err)
		}
		return b[0], binary.LittleEndian.Uint64(b[1:9])
	}

	// A first batch: one refused, one prepared, committed.
	offer(1, "no")
	offer(2, "yes")
	kinds := map[uint64]byte{}
	for range 2 {
		k, id := answer()
		kinds[id] = k
	}
	if kinds[1] != 'R' || kinds[2] != 'P' {
		t.Fatalf("answers %v, want 1 refused (%d) and 2 prepared (%d)", kinds, 'R', 'P')
	}
	commit := binary.LittleEndian.AppendUint64([]byte{'C'}, 2)
	if _, err := parent.Write(commit); err != nil {
		t.Fatal(err)
	}
	a := <-h.Adopted()
	a.Conn.Close()

	// A second batch: both refused, and the previous generation ends the
	// channel without the commit that would have reported them.
	offer(3, "no")
	offer(4, "no")
	for range 2 {
		if k, id := answer(); k != 'R' {
			t.Fatalf("answer %q for %d, want a refusal", k, id)
		}
	}
	parent.Close()
	for range h.Adopted() {
		t.Fatal("a connection adopted without a commit")
	}
	m := u.Metrics()
	if m.HandoverAdopted != 1 || m.HandoverRefused != 3 {
		t.Fatalf("adopted %d, refused %d; want 1 and 3", m.HandoverAdopted, m.HandoverRefused)
	}
}

// newSide starts a new generation's side of the handover channel, whose
// Check refuses the state "no", and returns the previous generation's end
// of the channel (written by hand by the test).
func newSide(t *testing.T) (*net.UnixConn, *Upgrader, *Handover) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parent := fileUnixConn(t, fds[0])
	child := fileUnixConn(t, fds[1])
	u := &Upgrader{exitC: make(chan struct{}), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := &Handover{u: u, adoptC: make(chan Adoption), qSignal: make(chan struct{}, 1),
		opts: HandoverOptions{Timeout: 5 * time.Second, Check: func(state []byte) error {
			if string(state) == "no" {
				return errors.New("not this one")
			}
			return nil
		}}}
	go h.deliver()
	go h.receive(child)
	return parent, u, h
}

func fileUnixConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "handover-test")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}
