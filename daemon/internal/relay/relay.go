//go:build linux

// Package relay carries connections between two processes of `handoff run`
// that hand them over (--handover): each process gets two channels
// (SOCK_SEQPACKET pairs) whose other ends handoff keeps, and when one
// process replaces another, Start relays the library's handover protocol
// (package upgrader) message by message, with its descriptors, from the old
// process's out channel to the new one's in channel and back, counting what
// it passes. handoff keeps no copy of a connection: each descriptor is
// closed once passed on. The first end or failure on either side closes
// both channels, which both processes read as an abort: the old process
// keeps what it had not seen committed.
package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/hangup"
	"github.com/handoff-dev/handoff/internal/hoproto"
	"github.com/handoff-dev/handoff/upgrader"
)

// Channels are handoff's ends of one process's handover channels: In
// carries connections to the process from the one it replaces, Out from it
// to the one that replaces it. Whoever starts a Relay takes the ends it
// uses (sets the fields to nil); Close closes the others.
type Channels struct {
	In, Out *net.UnixConn
}

// NewChannels makes a process's two channels and returns handoff's ends,
// the process's ends (to pass after its sockets, in that order) and the
// variable that names them to the process, given the number of descriptors
// passed before them. The caller closes the process's ends once the process
// has started (or failed to).
func NewChannels(before int) (*Channels, []*os.File, string, error) {
	var mine [2]*net.UnixConn
	var theirs []*os.File
	fail := func(err error) (*Channels, []*os.File, string, error) {
		for _, c := range mine {
			if c != nil {
				c.Close()
			}
		}
		for _, f := range theirs {
			f.Close()
		}
		return nil, nil, "", fmt.Errorf("handover channel: %w", err)
	}
	for i := range mine {
		syscall.ForkLock.RLock()
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		syscall.ForkLock.RUnlock()
		if err != nil {
			return fail(os.NewSyscallError("socketpair", err))
		}
		f := os.NewFile(uintptr(fds[0]), "handoff-handover")
		c, err := net.FileConn(f)
		f.Close()
		theirs = append(theirs, os.NewFile(uintptr(fds[1]), "handoff-handover-child"))
		if err != nil {
			return fail(err)
		}
		mine[i] = c.(*net.UnixConn)
	}
	env := upgrader.HandoverChannelsEnv + "=" + strconv.Itoa(3+before) + "," + strconv.Itoa(4+before)
	return &Channels{In: mine[0], Out: mine[1]}, theirs, env, nil
}

// Close closes the ends no relay took. It does nothing on a nil Channels.
func (c *Channels) Close() {
	if c == nil {
		return
	}
	for _, x := range []*net.UnixConn{c.In, c.Out} {
		if x != nil {
			x.Close()
		}
	}
	c.In, c.Out = nil, nil
}

// TakeHello reads, without waiting, the hello a process that adopts writes
// on its In channel before it is ready; nil if there is none (the process
// adopts nothing).
func (c *Channels) TakeHello() []byte {
	if c == nil || c.In == nil {
		return nil
	}
	rc, err := c.In.SyscallConn()
	if err != nil {
		return nil
	}
	b := make([]byte, 16)
	n := -1
	_ = rc.Control(func(fd uintptr) {
		n, _, err = unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT)
	})
	if err != nil || n < 2 || b[0] != 'H' {
		return nil
	}
	// The old process is told the version this relay passes on: a newer
	// one's messages might hold more descriptors than it has room for.
	b[1] = min(b[1], hoproto.Version)
	return b[:n]
}

// A relay passes the library's handover protocol between an old process's
// Out channel (from) and a new one's In channel (to), message by message
// with their descriptors, counting by each message's kind. The first end
// or failure on either side closes both: an abort for both processes.
type relay struct {
	from, to  *net.UnixConn
	closeOnce sync.Once
	// report is given an EvRelayed at each commit passed on, and once
	// the relay has ended (Done).
	report func(gen.EvRelayed)

	mu sync.Mutex
	// Since the last commit: the connections offered, and those refused.
	offered, refused int
	err              error
	// start is when the relay started; lastCommit when it last passed a
	// commit on.
	start, lastCommit time.Time
}

// Start relays from the old process's channel from to the new one's to,
// in goroutines of its own, until either side ends; it owns both ends from
// then on. report is called with each commit as it passes (Committed, and
// the Refused of its batch), and once at the end (Done), with the
// connections left uncommitted (Fallback: they stay with the old process,
// refused or not, its batch aborted) and why the relay ended if it failed
// (Err), with the time from its start to the last commit (Took). report is
// called from the relay's goroutines, one call at a time.
func Start(from, to *net.UnixConn, report func(gen.EvRelayed)) {
	r := &relay{from: from, to: to, report: report, start: time.Now()}
	go r.run()
}

// run relays until either side ends; see Start.
func (r *relay) run() {
	done := make(chan struct{}, 2)
	go func() { r.pump(r.from, r.to, true); done <- struct{}{} }()
	go func() { r.pump(r.to, r.from, false); done <- struct{}{} }()
	<-done
	<-done
	r.mu.Lock()
	// What the new process refused since the last commit is counted as
	// refused, not fallen back: the old process keeps those either way.
	ev := gen.EvRelayed{Refused: r.refused, Fallback: max(r.offered-r.refused, 0), Done: true}
	if !r.lastCommit.IsZero() {
		ev.Took = r.lastCommit.Sub(r.start)
	}
	if r.err != nil {
		ev.Err = r.err.Error()
	}
	r.mu.Unlock()
	r.report(ev)
}

// shut closes both channels once: each pump's read then ends, and either
// process's next write or read fails — an abort. What the old process had
// queued and handoff had not read yet is read first, its connections
// counted as offered (they fall back: the old process keeps them) and its
// descriptors closed.
func (r *relay) shut(err error) {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		r.to.Close()
		r.drainQueued()
		r.from.Close()
	})
}

// drainQueued reads, without waiting, the messages queued on the old
// process's channel, counting the connections offered in them.
func (r *relay) drainQueued() {
	rc, err := r.from.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 64+upgrader.MaxHandoverState+upgrader.MaxHandoverUnread)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for range 1 << 16 { // bounded: the queue holds far fewer
		n := 0
		var rerr error
		_ = rc.Control(func(fd uintptr) {
			var oobn int
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			if rerr == nil {
				closeAll(rightsIn(oob[:oobn]))
			}
		})
		if rerr != nil || n <= 0 {
			return
		}
		if k := offeredIn(buf[:n]); k > 0 {
			r.mu.Lock()
			r.offered += k
			r.mu.Unlock()
		}
	}
}

// pump passes messages from src to dst until src ends or dst fails.
// forward: src is the old process (items, commits); else the new one
// (prepared, refused).
func (r *relay) pump(src, dst *net.UnixConn, forward bool) {
	buf := make([]byte, 64+upgrader.MaxHandoverState+upgrader.MaxHandoverUnread)
	oob := make([]byte, unix.CmsgSpace(4*8))
	reset := false
	// gone (backward only): the old process has closed its end. The new
	// one's answers are read on and dropped, so that it never blocks on
	// a full channel and stops reading the commits the forward pump still
	// passes on; and none is written to the closed end, which on kernels
	// before 6.10 would purge what the old process sent and handoff has
	// not read yet.
	gone := false
	for {
		n, oobn, _, _, err := src.ReadMsgUnix(buf, oob)
		fds := rightsIn(oob[:oobn])
		if forward && !reset && errors.Is(err, syscall.ECONNRESET) {
			// The old process closed its end (it died, or was done)
			// with answers unread: the kernel says so once, ahead of
			// the messages it sent before, which are still to pass on —
			// commits among them, whose connections are the new
			// process's now.
			reset = true
			closeAll(fds)
			continue
		}
		if err != nil || n == 0 {
			closeAll(fds)
			// The end of the channel: its process closed it or exited
			// (with the hello unread, if it offered nothing: a reset).
			end := err == nil || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
			switch {
			case errors.Is(err, net.ErrClosed):
				r.shut(nil) // the other pump's end
			case end && forward:
				r.shut(nil) // the old process is done: it exited
			case end:
				r.shut(errors.New("the new process closed its channel (it exited)"))
			case forward:
				r.shut(fmt.Errorf("reading the old process's channel: %w", err))
			default:
				r.shut(fmt.Errorf("reading the new process's channel: %w", err))
			}
			return
		}
		if gone || !forward && hangup.Peer(dst) {
			gone = true
			closeAll(fds)
			continue
		}
		msg := buf[:n]
		var rights []byte
		if len(fds) > 0 {
			rights = unix.UnixRights(fds...)
		}
		if k := refusedIn(msg); !forward && k > 0 {
			// Counted before the old process can read it and commit.
			r.mu.Lock()
			r.refused += k
			r.mu.Unlock()
		}
		werr := passOn(dst, src, msg, rights, forward)
		closeAll(fds) // in flight now, or failed: handoff keeps no copy
		if werr != nil && !forward && hangup.Peer(dst) {
			// The old process is gone: the messages it sent before,
			// commits among them, are still to pass on. The forward pump
			// reads them to its channel's end, then shuts both.
			gone = true
			continue
		}
		if werr != nil {
			r.shut(fmt.Errorf("passing a message on: %w", werr))
			return
		}
		if forward {
			r.passed(msg)
		}
	}
}

// maxRelayStall bounds how long a message may wait for room in its
// receiver's channel: a receiver that reads nothing for that long ends the
// relay (the library's own timeouts end it sooner).
const maxRelayStall = 5 * time.Minute

// passOn writes one message to dst. While dst has no room (its process is
// slow to read), it retries every 250 ms, up to maxRelayStall. With
// forward false (src is the new process, dst the old), it also ends as soon
// as src's process has closed its end: a gone new process's answers are of
// no use. Forward, it does not: what the old process sent before it closed
// its end (it gave up on a batch after its own HandoverOptions.Timeout,
// which handoff does not know, or it died) may hold commits, whose
// connections it has closed as the new process's. SOCK_SEQPACKET writes a
// message whole or not at all.
func passOn(dst, src *net.UnixConn, msg, rights []byte, forward bool) error {
	start := time.Now()
	for {
		_ = dst.SetWriteDeadline(time.Now().Add(250 * time.Millisecond))
		_, _, err := dst.WriteMsgUnix(msg, rights, nil)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if !forward && hangup.Peer(src) {
			return errors.New("the sending process closed its channel while the receiver had no room")
		}
		if time.Since(start) > maxRelayStall {
			return fmt.Errorf("the receiving process read nothing for %v", maxRelayStall)
		}
	}
}

// passed counts a message the old process sent, passed on, by its kind
// byte: 'I' a connection offered, 'J' a pack of them (version 2); 'C' a
// commit of 8-byte ids, which settles
// the batch — those ids moved, the refused ones stay — and is reported.
func (r *relay) passed(msg []byte) {
	r.mu.Lock()
	switch msg[0] {
	case 'I', 'J':
		r.offered += offeredIn(msg)
		r.mu.Unlock()
	case 'C':
		committed := (len(msg) - 1) / 8
		ev := gen.EvRelayed{Committed: committed, Refused: r.refused}
		r.offered = max(r.offered-committed-r.refused, 0)
		if committed > 0 { // not a batch refused whole
			r.lastCommit = time.Now()
		}
		r.refused = 0
		r.mu.Unlock()
		r.report(ev)
	default:
		r.mu.Unlock()
	}
}

// offeredIn returns how many connections the old process's message msg
// offers: one for an 'I', a pack's count for a 'J'.
func offeredIn(msg []byte) int {
	switch msg[0] {
	case 'I':
		return 1
	case 'J':
		return hoproto.PackLen(msg)
	}
	return 0
}

// refusedIn returns how many connections the new process's message msg
// refuses: one for an 'R', a pack's refusals for an 'A'.
func refusedIn(msg []byte) int {
	switch msg[0] {
	case 'R':
		return 1
	case 'A':
		return hoproto.Refusals(msg)
	}
	return 0
}

// rightsIn returns the descriptors SCM_RIGHTS brought in oob.
func rightsIn(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
