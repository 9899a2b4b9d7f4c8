//go:build linux

package upgrader

import (
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/hoproto"
)

// The new side reads a pack ('J') and answers it in one 'A': prepared,
// refused by Check, and refused for the descriptor that did not arrive
// (the kernel gives a pack's descriptors in order, as many as fit). A
// commit then adopts the prepared one, with its state and unread bytes.
func TestNewSideReadsPack(t *testing.T) {
	parent, u, h := newSide(t)

	server1, client1 := tcpPair(t)
	server2, _ := tcpPair(t)
	var p hoproto.Pack
	p.Reset()
	p.Add(1, []byte("yes"), []byte("half a mess"))
	p.Add(2, []byte("no"), nil)
	p.Add(3, []byte("yes"), nil) // its descriptor does not come
	sent := time.Now()
	if _, _, err := parent.WriteMsgUnix(p.Bytes(), unix.UnixRights(dupOf(t, server1), dupOf(t, server2)), nil); err != nil {
		t.Fatal(err)
	}
	_ = parent.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 4096)
	n, err := parent.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	as, err := hoproto.ParseAnswers(b[:n])
	if err != nil {
		t.Fatalf("the answer %q: %v, want one 'A' for the pack", b[:n], err)
	}
	got := map[uint64]string{}
	for _, a := range as {
		got[a.ID] = a.Reason
	}
	if len(as) != 3 || got[1] != "" || !strings.Contains(got[2], "not this one") || !strings.Contains(got[3], "no descriptor arrived") {
		t.Fatalf("answers %+v, want 1 prepared, 2 refused by Check, 3 refused for its descriptor", as)
	}
	if _, err := parent.Write(binary.LittleEndian.AppendUint64([]byte{'C'}, 1)); err != nil {
		t.Fatal(err)
	}
	a := <-h.Adopted()
	defer a.Conn.Close()
	if string(a.State) != "yes" || string(a.Unread) != "half a mess" {
		t.Fatalf("adopted with state %q and unread %q", a.State, a.Unread)
	}
	server1.Close()
	if _, err := client1.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	_ = a.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := a.Conn.Read(b); err != nil || string(b[:n]) != "!" {
		t.Fatalf("the adopted connection read %q, %v", b[:n], err)
	}
	parent.Close()
	for range h.Adopted() {
	}
	m := u.Metrics()
	if m.HandoverAdopted != 1 || m.HandoverRefused != 2 {
		t.Fatalf("adopted %d, refused %d; want 1 and 2", m.HandoverAdopted, m.HandoverRefused)
	}
	// One handover, timed from the pack to the commit.
	if hd := m.HandoverDuration; hd.Count != 1 || hd.Sum <= 0 || hd.Sum > time.Since(sent).Seconds() {
		t.Fatalf("handover duration %+v, want one of more than 0 and at most the %v since the pack was sent", hd, time.Since(sent))
	}
}

// The old side packs its offers for a new generation that said version 2,
// and sends them one by one ('I') to one that said version 1 (an older
// release, or the Python helper); either way each Offer returns once
// committed.
func TestOldSidePacksByVersion(t *testing.T) {
	for _, version := range []byte{1, 2} {
		t.Run("version"+string('0'+version), func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			parent := fileUnixConn(t, fds[0])
			child := fileUnixConn(t, fds[1])
			if _, err := child.Write([]byte{'H', version}); err != nil {
				t.Fatal(err)
			}
			u := &Upgrader{exitC: make(chan struct{}), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			u.hoNext.Store(parent)
			h := &Handover{u: u, opts: HandoverOptions{Timeout: 5 * time.Second, Batch: 16}}
			const conns = 5
			res := make(chan error, conns)
			for i := range conns {
				server, _ := tcpPair(t)
				raw, err := server.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				go func() { res <- h.send(server, raw, []byte{byte(i)}, nil) }()
			}
			// The offers, answered as they come, and the commits, which may
			// come between them (a batch is committed once answered, and
			// the offers may come in more than one batch).
			seen, committed := 0, 0
			b := make([]byte, 1<<16)
			oob := make([]byte, unix.CmsgSpace(8*4))
			_ = child.SetReadDeadline(time.Now().Add(10 * time.Second))
			for seen < conns || committed < conns {
				n, oobn, _, _, err := child.ReadMsgUnix(b, oob)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rights(oob[:oobn])
				if err != nil {
					t.Fatal(err)
				}
				closeFds(got)
				if b[0] == 'C' {
					committed += (n - 1) / 8
					continue
				}
				if want := map[byte]byte{1: 'I', 2: 'J'}[version]; b[0] != want {
					t.Fatalf("version %d: a message of kind %q, want %q", version, b[0], want)
				}
				var ids []uint64
				if b[0] == 'I' {
					ids = []uint64{binary.LittleEndian.Uint64(b[1:9])}
					if _, err := child.Write(append([]byte{'P'}, b[1:9]...)); err != nil {
						t.Fatal(err)
					}
				} else {
					items, err := hoproto.ParsePack(b[:n])
					if err != nil {
						t.Fatal(err)
					}
					var a hoproto.Answers
					a.Reset()
					for _, it := range items {
						ids = append(ids, it.ID)
						a.Add(it.ID, "")
					}
					if _, err := child.Write(a.Bytes()); err != nil {
						t.Fatal(err)
					}
				}
				if len(got) != len(ids) {
					t.Fatalf("%d descriptors for %d connections", len(got), len(ids))
				}
				seen += len(ids)
			}
			for range conns {
				if err := <-res; err != nil {
					t.Fatalf("an Offer: %v", err)
				}
			}
		})
	}
}
