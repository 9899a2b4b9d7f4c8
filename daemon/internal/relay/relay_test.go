//go:build linux

package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/hoproto"
	"golang.org/x/sys/unix"
)

// pair is an old and a new process's channels, as two processes would hold
// them: the old one's Out end and the new one's In end, with a relay
// between handoff's ends.
type pair struct {
	old, new *net.UnixConn
	reports  chan gen.EvRelayed
}

// channels makes one process's channels and returns handoff's ends and the
// process's end of one of them: which is 0 for its in channel, 1 for out.
func channels(t *testing.T, which int) (*Channels, *net.UnixConn) {
	t.Helper()
	c, theirs, env, err := NewChannels(2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(env, "=5,6") {
		t.Fatalf("variable %q: want the channels named as fds 5 and 6 after 2 sockets", env)
	}
	fc, err := net.FileConn(theirs[which])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range theirs {
		f.Close()
	}
	t.Cleanup(func() { fc.Close(); c.Close() })
	return c, fc.(*net.UnixConn)
}

// ends returns the old process's out end and the new one's in end, and
// handoff's ends between them (from, to), for a relay to take.
func ends(t *testing.T) (oldEnd, newEnd, from, to *net.UnixConn) {
	t.Helper()
	oldC, oldEnd := channels(t, 1) // the old process writes on its out channel
	newC, newEnd := channels(t, 0) // the new one reads its in channel
	from, to = oldC.Out, newC.In
	oldC.Out, newC.In = nil, nil
	return oldEnd, newEnd, from, to
}

// offerPipe writes on c, as the old process does with a connection, an
// offer of connection 7 whose descriptor is a pipe's read end, and returns
// the offer and the pipe's write end.
func offerPipe(t *testing.T, c *net.UnixConn) ([]byte, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // in flight, or passed on: the copy sent lives on
	t.Cleanup(func() { w.Close() })
	offer := []byte("I\x00\x00\x00\x00\x00\x00\x00\x07state")
	if _, _, err := c.WriteMsgUnix(offer, unix.UnixRights(int(r.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	return offer, w
}

func newPair(t *testing.T) *pair {
	t.Helper()
	oldEnd, newEnd, from, to := ends(t)
	p := &pair{old: oldEnd, new: newEnd, reports: make(chan gen.EvRelayed, 16)}
	Start(from, to, func(ev gen.EvRelayed) { p.reports <- ev })
	return p
}

func (p *pair) report(t *testing.T) gen.EvRelayed {
	t.Helper()
	select {
	case ev := <-p.reports:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no report from the relay within 10 s")
		return gen.EvRelayed{}
	}
}

// TestRelayCommit: an offer with a descriptor reaches the new process as it
// was sent, with a descriptor that works; its answer reaches the old one;
// the commit reaches the new process and is reported with its count; the end, once the old process
// closes its channel, with nothing fallen back.
func TestRelayCommit(t *testing.T) {
	started := time.Now()
	p := newPair(t)
	offer, w := offerPipe(t, p.old)
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := p.new.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], offer) {
		t.Fatalf("the new process read %q, want %q", buf[:n], offer)
	}
	// Decoded here, not with the package's rightsIn, so that a fault there
	// cannot hide on both sides.
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("the new process got control messages %v, %v; want one", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("the new process got %d descriptors, want 1", len(fds))
	}
	got := os.NewFile(uintptr(fds[0]), "passed")
	defer got.Close()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := got.Read(buf[:1]); err != nil || buf[0] != 'x' {
		t.Fatalf("reading the passed descriptor: %q, %v; want the pipe's byte", buf[:1], err)
	}
	if _, err := p.new.Write([]byte("P\x00\x00\x00\x00\x00\x00\x00\x07")); err != nil {
		t.Fatal(err)
	}
	if n, err := p.old.Read(buf); err != nil || buf[0] != 'P' || n != 9 {
		t.Fatalf("the old process read %q, %v; want the new one's answer", buf[:n], err)
	}
	if _, err := p.old.Write([]byte("C\x00\x00\x00\x00\x00\x00\x00\x07")); err != nil {
		t.Fatal(err)
	}
	if ev := p.report(t); ev.Committed != 1 || ev.Refused != 0 || ev.Done {
		t.Fatalf("after the commit: %+v, want 1 committed", ev)
	}
	committed := time.Since(started)
	if n, err := p.new.Read(buf); err != nil || buf[0] != 'C' || n != 9 {
		t.Fatalf("the new process read %q, %v; want the commit", buf[:n], err)
	}
	// A batch refused whole is committed empty: it moves nothing, and
	// does not count in Took. (The pause puts it well past the first, so
	// that a Took counted to it would show.)
	time.Sleep(50 * time.Millisecond)
	if _, err := p.old.Write([]byte("C")); err != nil {
		t.Fatal(err)
	}
	if ev := p.report(t); ev.Committed != 0 || ev.Done {
		t.Fatalf("after the empty commit: %+v, want nothing committed", ev)
	}
	if n, err := p.new.Read(buf); err != nil || string(buf[:n]) != "C" {
		t.Fatalf("the new process read %q, %v; want the empty commit", buf[:n], err)
	}
	p.old.Close()
	ev := p.report(t)
	if !ev.Done || ev.Fallback != 0 || ev.Err != "" {
		t.Fatalf("after the old process closed: %+v, want done, nothing fallen back, no error", ev)
	}
	// Took ends at the commit that moved a connection, not at the old
	// process's end.
	if ev.Took <= 0 || ev.Took > committed {
		t.Errorf("took %v from the relay's start to its commit; want more than 0 and at most the %v the test saw", ev.Took, committed)
	}
	// The new process reads the end of its channel: no more connections.
	readEnd(t, p.new, "the new process")
}

// readEnd fails t unless c's next read finds the channel ended by its
// peer (handoff's end closed), within 10 s.
func readEnd(t *testing.T, c *net.UnixConn, who string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n != 0 || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("%s read %q, %v; want its channel ended by handoff", who, buf[:n], err)
	}
}

// TestRelayNewProcessGone: when the new process closes its channel with
// two offers not committed, the relay ends both channels (the old process
// reads an abort), and reports both offers fallen back, saying why.
func TestRelayNewProcessGone(t *testing.T) {
	p := newPair(t)
	for range 2 {
		if _, err := p.old.Write([]byte("I\x00\x00\x00\x00\x00\x00\x00\x01")); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for range 2 {
		if _, err := p.new.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	p.new.Close()
	ev := p.report(t)
	if !ev.Done || ev.Fallback != 2 || !strings.Contains(ev.Err, "the new process closed its channel") || ev.Took != 0 {
		t.Fatalf("after the new process closed: %+v, want done, 2 fallen back and why, no time (no commit)", ev)
	}
	readEnd(t, p.old, "the old process")
}

// TestRelayOldProcessGoneWithCommit: the old process sent an offer and its
// commit, then closed its end with an answer unread (it died). Reading its
// channel, the kernel reports the reset first: the offer and the commit
// still reach the new process, and the commit is counted, not fallen back.
func TestRelayOldProcessGoneWithCommit(t *testing.T) {
	oldEnd, newEnd, from, to := ends(t)
	// An answer the old process never reads.
	if _, err := from.Write([]byte("P\x00\x00\x00\x00\x00\x00\x00\x07")); err != nil {
		t.Fatal(err)
	}
	offer, _ := offerPipe(t, oldEnd)
	commit := []byte("C\x00\x00\x00\x00\x00\x00\x00\x07")
	if _, err := oldEnd.Write(commit); err != nil {
		t.Fatal(err)
	}
	oldEnd.Close()
	reports := make(chan gen.EvRelayed, 4)
	Start(from, to, func(ev gen.EvRelayed) { reports <- ev })
	_ = newEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := newEnd.ReadMsgUnix(buf, oob)
	if err != nil || !bytes.Equal(buf[:n], offer) {
		t.Fatalf("the new process read %q, %v; want the offer the old one sent before it died", buf[:n], err)
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	if n, err := newEnd.Read(buf); err != nil || !bytes.Equal(buf[:n], commit) {
		t.Fatalf("the new process read %q, %v; want the commit", buf[:n], err)
	}
	select {
	case ev := <-reports:
		if ev.Committed != 1 || ev.Done {
			t.Fatalf("first report %+v, want the commit of 1", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report of the commit")
	}
}

// TestRelayOldGoneBeforeAnswer: the old process wrote an offer and its
// commit, then died with an answer unread; the new process's answer to an
// earlier offer is passed back first and finds the old one gone. That
// must not end the relay before the commit is passed on: the backward pump
// drops the answer and reads on, the forward one reads the old channel to
// its end and shuts both, and then the backward pump ends too. (The
// backward pump reads the answer before the forward pump starts, so that
// it does not depend on which goroutine goes first.)
func TestRelayOldGoneBeforeAnswer(t *testing.T) {
	oldEnd, newEnd, from, to := ends(t)
	if _, err := from.Write([]byte("P\x00\x00\x00\x00\x00\x00\x00\x01")); err != nil {
		t.Fatal(err) // an answer the old process never reads
	}
	offer, _ := offerPipe(t, oldEnd)
	commit := []byte("C\x00\x00\x00\x00\x00\x00\x00\x07")
	if _, err := oldEnd.Write(commit); err != nil {
		t.Fatal(err)
	}
	oldEnd.Close()
	// The new process answers an earlier offer, then keeps its channel.
	if _, err := newEnd.Write([]byte("P\x00\x00\x00\x00\x00\x00\x00\x06")); err != nil {
		t.Fatal(err)
	}
	r := &relay{from: from, to: to, report: func(gen.EvRelayed) {}}
	_ = newEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The backward pump: it reads the answer, cannot pass it to the gone
	// old process, and reads on; then the forward pump.
	back := make(chan struct{})
	go func() {
		defer close(back)
		r.pump(r.to, r.from, false)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var n int
		rc, _ := to.SyscallConn()
		_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if n == 0 {
			break // the answer is read
		}
		if time.Now().After(deadline) {
			t.Fatal("the backward pump did not read the answer within 10 s")
		}
	}
	r.pump(r.from, r.to, true)
	select {
	case <-back:
	case <-time.After(10 * time.Second):
		t.Fatal("the backward pump did not end within 10 s of the relay's end")
	}
	buf := make([]byte, 256)
	if n, err := newEnd.Read(buf); err != nil || !bytes.Equal(buf[:n], offer) {
		t.Fatalf("the new process read %q, %v; want the offer", buf[:n], err)
	}
	if n, err := newEnd.Read(buf); err != nil || !bytes.Equal(buf[:n], commit) {
		t.Fatalf("the new process read %q, %v; want the commit", buf[:n], err)
	}
}

// TestRelayRefusedBeforeTheEnd: connections the new process refused after
// the last commit, when the old process ends the channel without another,
// are reported refused at the end, and only the others fall back.
func TestRelayRefusedBeforeTheEnd(t *testing.T) {
	p := newPair(t)
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4*8))
	for range 3 {
		offerPipe(t, p.old)
		_, oobn, _, _, err := p.new.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for i := range msgs {
			fds, _ := unix.ParseUnixRights(&msgs[i])
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	// Two refused, one left unanswered; each refusal read by the old end,
	// then it closes its channel without a commit.
	for range 2 {
		if _, err := p.new.Write([]byte("R\x00\x00\x00\x00\x00\x00\x00\x07full")); err != nil {
			t.Fatal(err)
		}
		if n, err := p.old.Read(buf); err != nil || buf[0] != 'R' {
			t.Fatalf("the old process read %q, %v; want a refusal", buf[:n], err)
		}
	}
	p.old.Close()
	ev := p.report(t)
	if !ev.Done || ev.Refused != 2 || ev.Fallback != 1 || ev.Committed != 0 {
		t.Fatalf("at the end: %+v, want 2 refused and 1 fallen back", ev)
	}
}

// TestRelayNewAnswersAfterOldGone: once the old process is gone, the new
// one's answers are read and dropped, so that it never blocks writing them
// while commits the forward pump passes on wait in its channel. Here the new
// process answers far more than its channel holds before it reads anything,
// while the old one has sent more offers than the new one's channel holds
// and its commit, and closed.
func TestRelayNewAnswersAfterOldGone(t *testing.T) {
	p := newPair(t)
	const offers, answers = 300, 3000
	sent := make(chan error, 1)
	go func() {
		for i := range offers {
			msg := binary.LittleEndian.AppendUint64([]byte{'I'}, uint64(i+1))
			msg = append(msg, 0, 0, 0, 0)
			if _, err := p.old.Write(msg); err != nil {
				sent <- err
				return
			}
		}
		_, err := p.old.Write([]byte("C\x00\x00\x00\x00\x00\x00\x00\x01"))
		p.old.Close()
		sent <- err
	}()
	for i := range answers {
		_ = p.new.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := p.new.Write(binary.LittleEndian.AppendUint64([]byte{'P'}, uint64(i+1))); err != nil {
			t.Fatalf("answer %d: %v (the relay no longer reads the new process's channel)", i+1, err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	_ = p.new.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	got, reset := 0, false
	for {
		n, err := p.new.Read(buf)
		if errors.Is(err, syscall.ECONNRESET) && !reset {
			// handoff closed its end with answers of ours unread: said
			// once, ahead of the messages still to read.
			reset = true
			continue
		}
		if err != nil || n == 0 {
			break
		}
		got++
		if buf[0] == 'C' {
			break
		}
	}
	if got != offers+1 || buf[0] != 'C' {
		t.Fatalf("the new process read %d messages, the last %q; want the %d offers and the commit", got, buf[0], offers)
	}
}

// TestRelayPacks: a pack of three offers ('J', version 2) reaches the new
// process whole, with its three descriptors; its pack of answers ('A', one
// refusal) reaches the old process; the commit of the other two is
// reported with the refusal, and the end with nothing fallen back.
func TestRelayPacks(t *testing.T) {
	p := newPair(t)
	var pk hoproto.Pack
	pk.Reset()
	var sent []int
	for id := uint64(1); id <= 3; id++ {
		pk.Add(id, []byte("s"), nil)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		sent = append(sent, int(r.Fd()))
	}
	if _, _, err := p.old.WriteMsgUnix(pk.Bytes(), unix.UnixRights(sent...), nil); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := p.new.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], pk.Bytes()) {
		t.Fatalf("the new process read %q, want the pack %q", buf[:n], pk.Bytes())
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v; want one", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 3 {
		t.Fatalf("the new process got %d descriptors, want 3", len(fds))
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	var as hoproto.Answers
	as.Reset()
	as.Add(1, "")
	as.Add(2, "not this one")
	as.Add(3, "")
	if _, err := p.new.Write(as.Bytes()); err != nil {
		t.Fatal(err)
	}
	if n, err := p.old.Read(buf); err != nil || !bytes.Equal(buf[:n], as.Bytes()) {
		t.Fatalf("the old process read %q, %v; want the answers", buf[:n], err)
	}
	commit := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64([]byte{'C'}, 1), 3)
	if _, err := p.old.Write(commit); err != nil {
		t.Fatal(err)
	}
	if ev := p.report(t); ev.Committed != 2 || ev.Refused != 1 || ev.Done {
		t.Fatalf("after the commit: %+v, want 2 committed and 1 refused", ev)
	}
	// A second pack, never committed: its two connections fall back.
	pk.Reset()
	pk.Add(4, nil, nil)
	pk.Add(5, nil, nil)
	if _, _, err := p.old.WriteMsgUnix(pk.Bytes(), unix.UnixRights(sent[:2]...), nil); err != nil {
		t.Fatal(err)
	}
	p.old.Close()
	if ev := p.report(t); !ev.Done || ev.Fallback != 2 || ev.Refused != 0 || ev.Err != "" {
		t.Fatalf("after the old process closed: %+v, want done, the second pack's 2 fallen back", ev)
	}
}

// TestHelloVersionCapped: the hello is passed on with the version capped
// at the one the relay knows, and as it is below.
func TestHelloVersionCapped(t *testing.T) {
	for _, tc := range []struct{ said, passed byte }{{1, 1}, {hoproto.Version, hoproto.Version}, {9, hoproto.Version}} {
		c, in := channels(t, 0)
		if _, err := in.Write([]byte{'H', tc.said}); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for deadline := time.Now().Add(10 * time.Second); got == nil && time.Now().Before(deadline); {
			got = c.TakeHello()
		}
		if len(got) != 2 || got[1] != tc.passed {
			t.Errorf("hello of version %d passed on as %v, want version %d", tc.said, got, tc.passed)
		}
	}
}
