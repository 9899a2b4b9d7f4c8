package upgrader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/hangup"
	"github.com/handoff-dev/handoff/internal/hoproto"
)

// The handover channel is a Unix socketpair of type SOCK_SEQPACKET between a
// generation and the one it starts, passed through tableflip under
// handoverName beside the control channel (one per attempt). Each message is
// one record, its first byte its kind:
//
//	child → parent  'H' VERSION                    from Handover, before Ready: it adopts
//	parent → child  'I' ID STATELEN STATE UNREAD   one connection, its descriptor attached
//	child → parent  'P' ID                         prepared: it holds the connection, untouched
//	child → parent  'R' ID REASON                  refused: the parent keeps it
//	parent → child  'C' ID...                      commit: those prepared are the child's
//
// Version 2 (internal/hoproto) adds packs: a parent whose child said
// version 2 or later sends up to eight items in one message ('J'), their
// descriptors attached in order, and the child answers the items of a pack
// in one message ('A') once it has prepared or refused them all. Items too
// large to pack go alone as 'I', and are answered alone. A pack saves each
// process on the way (handoff's relay, in daemon mode) a read and a write
// per connection.
//
// ID is a uint64, STATELEN a uint32, little-endian. The parent sends batches
// of items, up to hoWindow batches ahead of their answers, and commits each
// batch's prepared ones in one message once every answer of the batch is in
// (sent even when empty, so that the child can report the batch); a commit
// may follow items of later batches. The child takes the messages in order
// and answers each item once it has prepared it — several at once, so not
// always in the order sent; answers name their item — so the pipelining
// needed no change to version 1 of this format (before it, the parent waited
// for each batch's commit before it sent the next batch). A
// child that reads the end of the channel closes what it prepared and was
// not committed: the parent died or gave up, and owns those.
const handoverName = "handoff-handover"

// handoverVersion is the version this side says in its hello.
const handoverVersion = hoproto.Version

// adoptedEvery is how often, at most, a handover's adoptions are logged
// while it goes on (handover.adopted); each commit is a Debug record.
const adoptedEvery = time.Second

// passHandoverSocket makes the handover channel of the next generation's
// attempt and passes its end through tableflip. A failure is logged: the
// upgrade goes on, and the next generation cannot adopt connections.
func (u *Upgrader) passHandoverSocket() {
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	syscall.ForkLock.RUnlock()
	if err != nil {
		u.log.Warn("cannot make the handover channel: the next generation cannot adopt connections", "event", "handover.channel_failed", "err", os.NewSyscallError("socketpair", err))
		return
	}
	pf := os.NewFile(uintptr(fds[0]), "handoff-handover-parent")
	cf := os.NewFile(uintptr(fds[1]), "handoff-handover-child")
	defer cf.Close()
	c, err := net.FileConn(pf)
	pf.Close()
	if err == nil {
		err = u.core.AddFile(handoverName, cf)
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		u.log.Warn("cannot pass the handover channel: the next generation cannot adopt connections", "event", "handover.channel_failed", "err", err)
		return
	}
	if old := u.hoNext.Swap(c.(*net.UnixConn)); old != nil {
		old.Close() // a failed attempt's
	}
}

// adoptFromParent claims the handover channel the parent passed, if any,
// says that this generation adopts, and receives connections.
func (h *Handover) adoptFromParent() {
	u := h.u
	if !u.HasParent() {
		h.endAdoptions()
		return
	}
	select {
	case <-u.readyC:
		u.log.Warn("Handover was called after Ready: this generation adopts no connection", "event", "handover.late")
		h.endAdoptions()
		return
	default:
	}
	f, err := u.core.File(handoverName)
	if err != nil || f == nil {
		// A parent whose release has no handover.
		h.endAdoptions()
		return
	}
	c, err := net.FileConn(f)
	f.Close()
	uc, ok := c.(*net.UnixConn)
	if err != nil || !ok {
		if c != nil {
			c.Close()
		}
		u.log.Warn("cannot use the handover channel: this generation adopts no connection", "event", "handover.channel_failed", "err", err)
		h.endAdoptions()
		return
	}
	_ = uc.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := uc.Write([]byte{'H', handoverVersion}); err != nil {
		uc.Close()
		h.endAdoptions()
		return
	}
	go h.receive(uc)
}

// adoptWorkers bounds how many connections the new generation prepares at
// once. Preparing one (its socket's checks and epoll registration, see
// adoptedConn, then the answer) is nearly all system calls: with
// net.FileConn, about 85 µs of CPU a connection on a 2-core VM (perf,
// 20,000 connections), so that one goroutine preparing 10,000 in turn took
// 0.85 s of a 1.4 s handover.
func adoptWorkers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// offered is one connection offered, as receive read and checked it: its
// id, state and unread bytes (copies), its descriptors, and why it is
// refused ("" if it is to be prepared).
type offered struct {
	id            uint64
	state, unread []byte
	fds           []int
	reason        string
	pack          *answerPack // the answers of its 'J', nil for an 'I'
}

// answerPack gathers the answers for the connections of one 'J', which
// the worker that answers last sends in one 'A'.
type answerPack struct {
	mu   sync.Mutex
	left int
	a    hoproto.Answers
}

// receive is the new generation's side: it prepares each connection
// offered, or refuses it, and hands the committed ones to Adopted. The
// connections offered are prepared by adoptWorkers goroutines, each
// answering for its own; a commit names only connections answered, so
// every one it names is prepared by the time it is read.
func (h *Handover) receive(c *net.UnixConn) {
	u := h.u
	defer c.Close()
	buf := make([]byte, 16+MaxHandoverState+MaxHandoverUnread)
	oob := make([]byte, unix.CmsgSpace(8*4))
	var mu sync.Mutex // guards prepared, refused and why
	prepared := map[uint64]Adoption{}
	var adopted, refused, total, totalRefused int
	why := ""
	adoptions := &adoptedLog{log: u.log} // ended once the channel ends
	// From the first connection offered to the last commit: the handover's
	// time, for Metrics.
	var firstOffer, lastCommit time.Time
	// gone: the other end is closed (its reset read, its hang-up seen, or
	// an answer failed). No answer is written from then on: on kernels
	// before 6.10, a write to a closed SOCK_SEQPACKET peer could purge
	// this end's own queue, and with it commits still to read. A peer that
	// dies without answers of ours unread leaves no reset: each answer
	// asks first whether it hung up.
	var gone atomic.Bool
	reply := func(b []byte) {
		if gone.Load() {
			return
		}
		if hangup.Peer(c) {
			gone.Store(true)
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(h.opts.Timeout))
		if _, err := c.Write(b); err != nil {
			gone.Store(true)
		}
	}
	reset := false // the channel's reset is read
	work := make(chan offered, 64)
	var workers sync.WaitGroup
	for range adoptWorkers() {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for o := range work {
				h.prepare(o, &mu, prepared, &refused, &why, reply)
			}
		}()
	}
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		fds, perr := rights(oob[:oobn])
		if errors.Is(err, syscall.ECONNRESET) && !reset {
			// The previous generation closed its end (it died, or gave
			// up) with answers of ours unread: the kernel says so once,
			// ahead of the messages it sent before, which are still to
			// read — commits among them, whose connections are ours.
			reset = true
			gone.Store(true)
			closeFds(fds)
			continue
		}
		if err != nil || n == 0 || perr != nil {
			closeFds(fds)
			if perr != nil {
				u.log.Warn("a handover message could not be parsed: the handover ends, the previous generation keeps what it did not commit", "event", "handover.channel_failed", "err", perr)
			}
			break
		}
		if firstOffer.IsZero() && (buf[0] == 'I' || buf[0] == 'J') {
			firstOffer = time.Now()
		}
		switch {
		case buf[0] == 'I' && n >= 13:
			id := binary.LittleEndian.Uint64(buf[1:9])
			slen := int(binary.LittleEndian.Uint32(buf[9:13]))
			if 13+slen > n {
				closeFds(fds)
				continue
			}
			o := offered{id: id, state: clone(buf[13 : 13+slen]), unread: clone(buf[13+slen : n]), fds: fds}
			o.reason = h.refusal(o.state, len(fds) > 0 && flags&unix.MSG_CTRUNC == 0)
			work <- o
		case buf[0] == 'J':
			items, err := hoproto.ParsePack(buf[:n])
			if err != nil {
				closeFds(fds)
				continue
			}
			pack := &answerPack{left: len(items)}
			pack.a.Reset()
			for i, it := range items {
				o := offered{id: it.ID, state: clone(it.State), unread: clone(it.Unread), pack: pack}
				// The kernel gives a pack's descriptors in order, as many as
				// there is room for.
				if i < len(fds) {
					o.fds = fds[i : i+1]
				}
				o.reason = h.refusal(o.state, i < len(fds))
				work <- o
			}
			if len(fds) > len(items) {
				closeFds(fds[len(items):])
			}
		case buf[0] == 'C':
			var batch []Adoption
			mu.Lock()
			for i := 1; i+8 <= n; i += 8 {
				id := binary.LittleEndian.Uint64(buf[i : i+8])
				if a, ok := prepared[id]; ok {
					delete(prepared, id)
					batch = append(batch, a)
				}
			}
			r, w := refused, why
			refused = 0
			mu.Unlock()
			if len(batch) > 0 {
				adopted += len(batch)
				total += len(batch)
				lastCommit = time.Now()
				h.commit(batch)
				u.log.Debug("a commit read", "event", "handover.commit", "conns", len(batch), "total", total)
				adoptions.add(len(batch))
			}
			if r > 0 {
				totalRefused += r
				u.log.Warn("connections refused: the previous generation drains them", "event", "handover.refused", "conns", r, "why", w)
			}
			u.book.do(func(ct *counters) { ct.Adopted += len(batch); ct.AdoptRefused += r })
		default:
			closeFds(fds)
		}
	}
	// The end of the channel: the parent exited, or gave up. The workers
	// finish what they took; what the parent did not commit is its own,
	// and if it died, those connections end now.
	close(work)
	workers.Wait()
	adoptions.end()
	if refused > 0 {
		// Refused after the last commit, which would have reported them:
		// the previous generation ended first, and keeps them.
		totalRefused += refused
		r := refused
		u.book.do(func(ct *counters) { ct.AdoptRefused += r })
		u.log.Warn("connections refused: the previous generation keeps them (it drains them, unless it died)", "event", "handover.refused", "conns", r, "why", why)
		refused = 0
	}
	for _, a := range prepared {
		a.Conn.(*hoConn).Conn.Close()
	}
	if len(prepared) > 0 {
		u.book.do(func(ct *counters) { ct.AdoptAborted += len(prepared) })
		u.log.Warn("the previous generation ended the handover before it committed these connections: closed here (if it died, they are lost)", "event", "handover.aborted", "conns", len(prepared), "adopted", total, "refused", totalRefused)
	}
	if total > 0 {
		took := lastCommit.Sub(firstOffer)
		u.book.do(func(ct *counters) { ct.HandoverSec.Observe(took.Seconds()) })
	}
	u.log.Info("handover from the previous generation ended", "event", "handover.ended", "adopted", total, "refused", totalRefused, "aborted", len(prepared))
	h.endAdoptions()
}

// adoptedLog logs a handover's adoptions (handover.adopted): at the first
// commit, then at most once per adoptedEvery while commits come — a
// handover of 10,000 connections is hundreds of commits — and what is left
// adoptedEvery after it came, or at the end, whichever is first. The
// records' conns add up to the connections adopted.
type adoptedLog struct {
	log *slog.Logger

	mu       sync.Mutex
	loggedAt time.Time
	unlogged int
	total    int
	timer    *time.Timer // pending while unlogged > 0
	seq      int         // the pending timer's; a timer whose seq is past does nothing
	ended    bool
}

// add counts n connections adopted by a commit.
func (a *adoptedLog) add(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unlogged += n
	a.total += n
	if a.ended {
		return
	}
	if wait := adoptedEvery - time.Since(a.loggedAt); wait > 0 {
		if a.timer == nil {
			seq := a.seq
			a.timer = time.AfterFunc(wait, func() { a.flush(seq) })
		}
		return
	}
	a.logLocked()
}

// flush is the timer seq's: it logs what is left unlogged.
func (a *adoptedLog) flush(seq int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seq != a.seq || a.ended {
		return
	}
	a.stopTimerLocked()
	if a.unlogged > 0 {
		a.logLocked()
	}
}

func (a *adoptedLog) stopTimerLocked() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
		a.seq++
	}
}

// end logs what is left and stops the timer; add logs nothing after it.
func (a *adoptedLog) end() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return
	}
	a.ended = true
	a.stopTimerLocked()
	if a.unlogged > 0 {
		a.logLocked()
	}
}

func (a *adoptedLog) logLocked() {
	a.log.Info("connections adopted from the previous generation", "event", "handover.adopted", "conns", a.unlogged, "total", a.total)
	a.loggedAt, a.unlogged = time.Now(), 0
	a.stopTimerLocked()
}

// refusal returns why a connection offered with state is refused before
// it is prepared, or "" if it is not: its descriptor did not come (hasFd
// false), this generation is stopping, or the program's Check says no. It
// runs in receive's reading goroutine, one connection at a time: Check
// need not be safe to call from several goroutines.
func (h *Handover) refusal(state []byte, hasFd bool) string {
	if !hasFd {
		return "no descriptor arrived: the new generation is out of descriptors (raise RLIMIT_NOFILE: LimitNOFILE= in its unit, or ulimit -n)"
	}
	select {
	case <-h.u.exitC:
		return "the new generation is stopping"
	default:
	}
	if err := h.check(state); err != nil {
		return err.Error()
	}
	return ""
}

// prepare is one of receive's workers at work on o: it adopts o's
// descriptor, unless o is refused already, records the connection prepared
// (or the refusal) and answers for it.
func (h *Handover) prepare(o offered, mu *sync.Mutex, prepared map[uint64]Adoption, refused *int, why *string, reply func([]byte)) {
	fds, reason := o.fds, o.reason
	var nc net.Conn
	if reason == "" {
		ac, err := adoptConn(fds[0]) // it owns fds[0] from here on
		fds = fds[1:]
		if err != nil {
			reason = fmt.Sprintf("adopting the descriptor: %v", err)
		} else {
			nc = ac
		}
	}
	closeFds(fds)
	msg := make([]byte, 9, 9+len(reason))
	binary.LittleEndian.PutUint64(msg[1:9], o.id)
	mu.Lock()
	if reason != "" {
		*refused++
		*why = reason
		msg[0] = 'R'
		msg = append(msg, reason...)
	} else {
		prepared[o.id] = Adoption{Conn: &hoConn{Conn: nc}, State: o.state, Unread: o.unread}
		msg[0] = 'P'
	}
	mu.Unlock()
	// Answered once recorded: the commit that names it finds it prepared.
	if p := o.pack; p != nil {
		p.mu.Lock()
		p.a.Add(o.id, reason)
		p.left--
		last := p.left == 0
		p.mu.Unlock()
		if last {
			reply(p.a.Bytes())
		}
		return
	}
	reply(msg)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// rights returns the descriptors SCM_RIGHTS brought in oob, in order. They
// are close-on-exec from the start: on Linux, net's ReadMsgUnix receives
// with MSG_CMSG_CLOEXEC. A malformed header (which the kernel does not
// write) ends the parse with an error, after the descriptors of the
// well-formed messages before it: the caller closes those and ends the
// handover, so that no descriptor it cannot account for stays open.
func rights(oob []byte) ([]int, error) {
	var fds []int
	for len(oob) > 0 {
		if len(oob) < unix.SizeofCmsghdr {
			return fds, errors.New("upgrader: handover: a truncated control message header")
		}
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return fds, fmt.Errorf("upgrader: handover: a control message of %d bytes in %d", l, len(oob))
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			data := oob[unix.CmsgLen(0):l]
			for i := 0; i+4 <= len(data); i += 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data[i:]))))
			}
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// hoWindow is how many batches the old generation keeps in flight: sent,
// their answers not all in. The new generation prepares the next batches
// while the old one commits the first: a batch no longer waits a round trip
// between two processes that each wait for the CPU (on 2 busy cores, a
// round trip took 40 ms, 6.3 s of the 7 s 10,000 connections took in
// batches of 64 one at a time).
const hoWindow = 8

// hoSender is the old generation's side: one goroutine that sends the
// offered connections in batches, and commits or aborts each batch.
type hoSender struct {
	h       *Handover
	c       *net.UnixConn
	packs   bool // the new generation reads packs (its hello said version 2 or later)
	offers  chan *hoOffer
	answers chan hoAnswer
	broken  error
	next    uint64
	// flight are the batches sent whose answers are not all in, oldest
	// first; byID finds an item's batch.
	flight []*hoBatch
	byID   map[uint64]*hoBatch

	// since the last report
	start                      time.Time
	startCPU                   time.Duration
	committed, refused, failed int
	refusedWhy                 string
	failedErr                  error
}

type hoOffer struct {
	c   net.Conn
	raw syscall.RawConn
	msg []byte
	id  uint64
	err error // the outcome, given to res once the batch is through
	res chan error
}

// hoBatch is a batch in flight: sent, committed once every item is
// answered.
type hoBatch struct {
	offers   []*hoOffer
	answered int
	refused  map[uint64]string
}

// hoAnswer is the new generation's answer for one connection, or err when
// the channel broke.
type hoAnswer struct {
	id     uint64
	reason string // refused
	ok     bool
	err    error
}

// send offers one connection through the sender, starting it if needed.
func (h *Handover) send(c net.Conn, raw syscall.RawConn, state, unread []byte) error {
	s, err := h.sender()
	if err != nil {
		return err
	}
	msg := make([]byte, 13+len(state)+len(unread))
	msg[0] = 'I'
	binary.LittleEndian.PutUint32(msg[9:13], uint32(len(state)))
	copy(msg[13:], state)
	copy(msg[13+len(state):], unread)
	o := &hoOffer{c: c, raw: raw, msg: msg, res: make(chan error, 1)}
	s.offers <- o
	return <-o.res
}

// sender returns the running sender, started at the first call: it takes
// the handover channel of the attempt that succeeded and reads the new
// generation's hello.
func (h *Handover) sender() (*hoSender, error) {
	h.outOnce.Do(func() {
		u := h.u
		c := u.hoNext.Swap(nil)
		if c == nil {
			h.outErr = ErrNoAdopter
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 16)
		n, err := c.Read(b)
		if err != nil || n < 2 || b[0] != 'H' {
			c.Close()
			h.outErr = ErrNoAdopter
			u.log.Warn("the new generation adopts no connection: they drain", "event", "handover.unavailable", "err", err)
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		// Room for every answer that can be due, so that the reader never
		// blocks: the new generation's answers would then fill the
		// channel, it would stop reading, and this side block sending.
		s := &hoSender{h: h, c: c, offers: make(chan *hoOffer, 4*h.opts.Batch),
			answers: make(chan hoAnswer, (hoWindow+1)*h.opts.Batch+1), byID: map[uint64]*hoBatch{},
			packs: b[1] >= 2}
		go s.read()
		go s.loop()
		h.out = s
		u.log.Info("handing connections over to the new generation", "event", "handover.started", "batch", h.opts.Batch)
	})
	return h.out, h.outErr
}

// read passes the new generation's answers to the batch loop; it ends at
// the first error, which it passes on too.
func (s *hoSender) read() {
	buf := make([]byte, 4096)
	for {
		n, err := s.c.Read(buf)
		if err == nil && n == 0 {
			err = errors.New("the new generation closed the handover channel")
		}
		if err != nil {
			s.answers <- hoAnswer{err: err}
			return
		}
		if buf[0] == 'A' {
			as, err := hoproto.ParseAnswers(buf[:n])
			if err != nil {
				s.answers <- hoAnswer{err: err}
				return
			}
			for _, a := range as {
				s.answers <- hoAnswer{id: a.ID, ok: a.Reason == "", reason: a.Reason}
			}
			continue
		}
		if n < 9 {
			continue
		}
		a := hoAnswer{id: binary.LittleEndian.Uint64(buf[1:9]), ok: buf[0] == 'P'}
		if buf[0] == 'R' {
			a.reason = string(buf[9:n])
		}
		s.answers <- a
	}
}

// loop sends the offers in batches as they come, up to hoWindow batches in
// flight, and commits each batch, oldest first, once all its items are
// answered. No answer for HandoverOptions.Timeout while batches are in
// flight (the new generation answers about in the order sent: a batch
// behind seven others waits for theirs), a broken channel or a failed write aborts every
// batch in flight and breaks the channel: later offers are aborted at once.
func (s *hoSender) loop() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var offers <-chan *hoOffer
		if len(s.flight) < hoWindow {
			offers = s.offers
		}
		select {
		case o := <-offers:
			b := s.gather(o)
			if s.start.IsZero() {
				s.start, s.startCPU = time.Now(), processCPU()
			}
			if err := s.sendBatch(b); err != nil {
				s.fail(err)
				s.abortAll(b)
				break
			}
			if len(s.flight) == 1 {
				timer.Reset(s.h.opts.Timeout)
			}
		case a := <-s.answers:
			if a.err != nil {
				s.fail(fmt.Errorf("the new generation's answer: %w", a.err))
				s.abortAll()
				break
			}
			s.answered(a)
			s.commitDone()
			if len(s.flight) > 0 {
				timer.Reset(s.h.opts.Timeout) // it makes progress
			}
		case <-timer.C:
			if len(s.flight) > 0 {
				s.fail(fmt.Errorf("the new generation answered nothing for %v while connections were in flight", s.h.opts.Timeout))
				s.abortAll()
			}
		}
	}
}

// gather makes a batch of o and the offers waiting behind it.
func (s *hoSender) gather(o *hoOffer) *hoBatch {
	b := &hoBatch{offers: make([]*hoOffer, 1, s.h.opts.Batch)}
	b.offers[0] = o
	for len(b.offers) < s.h.opts.Batch {
		select {
		case o := <-s.offers:
			b.offers = append(b.offers, o)
		default:
			return b
		}
	}
	return b
}

// fail breaks the channel: no batch is committed from here on, and the
// new generation, reading its end, closes what it prepared.
func (s *hoSender) fail(err error) {
	if s.broken == nil {
		s.broken = err
		s.c.Close()
	}
}

// sendBatch sends every item of b, each with its descriptor, and puts b in
// flight; an error breaks the channel (the caller aborts).
func (s *hoSender) sendBatch(b *hoBatch) error {
	if s.broken != nil {
		return s.broken
	}
	_ = s.c.SetWriteDeadline(time.Now().Add(s.h.opts.Timeout))
	for _, o := range b.offers {
		s.next++
		o.id = s.next
		binary.LittleEndian.PutUint64(o.msg[1:9], o.id)
	}
	var p hoproto.Pack
	for i := 0; i < len(b.offers); {
		state, unread := b.offers[i].parts()
		if !s.packs || 3+hoproto.ItemSize(state, unread) > hoproto.PackBytes {
			if err := s.write(b.offers[i].msg, b.offers[i:i+1]); err != nil {
				return fmt.Errorf("sending a connection: %w", err)
			}
			i++
			continue
		}
		p.Reset()
		first := i
		for i < len(b.offers) && p.Len() < hoproto.PackMax {
			state, unread := b.offers[i].parts()
			if p.Size()+hoproto.ItemSize(state, unread) > hoproto.PackBytes {
				break
			}
			p.Add(b.offers[i].id, state, unread)
			i++
		}
		if err := s.write(p.Bytes(), b.offers[first:i]); err != nil {
			return fmt.Errorf("sending connections: %w", err)
		}
	}
	for _, o := range b.offers {
		s.byID[o.id] = b
	}
	s.flight = append(s.flight, b)
	return nil
}

// write sends msg with the descriptors of offers attached, in order, each
// held (see syscall.RawConn's Control) until the message is written.
func (s *hoSender) write(msg []byte, offers []*hoOffer) error {
	fds := make([]int, len(offers))
	var werr error
	var hold func(i int) error
	hold = func(i int) error {
		if i == len(offers) {
			_, _, werr = s.c.WriteMsgUnix(msg, unix.UnixRights(fds...), nil)
			return nil
		}
		var inner error
		err := offers[i].raw.Control(func(fd uintptr) {
			fds[i] = int(fd)
			inner = hold(i + 1)
		})
		if err == nil {
			err = inner
		}
		return err
	}
	if err := hold(0); err != nil {
		return err
	}
	return werr
}

// parts returns the state and the unread bytes of o's 'I' message.
func (o *hoOffer) parts() (state, unread []byte) {
	n := int(binary.LittleEndian.Uint32(o.msg[9:13]))
	return o.msg[13 : 13+n], o.msg[13+n:]
}

// answered records a's answer in its batch; an answer to no item in flight
// (one of an aborted batch) is dropped.
func (s *hoSender) answered(a hoAnswer) {
	b := s.byID[a.id]
	if b == nil {
		return
	}
	delete(s.byID, a.id)
	b.answered++
	if !a.ok {
		if b.refused == nil {
			b.refused = map[uint64]string{}
		}
		b.refused[a.id] = a.reason
	}
}

// commitDone commits the oldest batches whose items are all answered. A
// failed commit aborts every batch in flight.
func (s *hoSender) commitDone() {
	for len(s.flight) > 0 && s.flight[0].answered == len(s.flight[0].offers) {
		b := s.flight[0]
		s.flight = s.flight[1:]
		commit := make([]byte, 1, 1+8*len(b.offers))
		commit[0] = 'C'
		for _, o := range b.offers {
			if _, no := b.refused[o.id]; !no {
				commit = binary.LittleEndian.AppendUint64(commit, o.id)
			}
		}
		if _, err := s.c.Write(commit); err != nil {
			s.fail(fmt.Errorf("committing: %w", err))
			s.abortAll(b)
			return
		}
		// Committed: the connections are the new generation's. The
		// figures are logged before this process closes any of them: a
		// program may exit as soon as its last connection is closed (the
		// Drainer of Upgrader.Serve sees the close and the drain ends),
		// before this goroutine runs on.
		for _, o := range b.offers {
			if why, no := b.refused[o.id]; no {
				s.refused++
				s.refusedWhy = why
				o.err = fmt.Errorf("%w: %s", ErrRefused, why)
				continue
			}
			s.committed++
			o.err = nil
		}
		s.reportIfIdle()
		for _, o := range b.offers {
			if o.err == nil {
				o.c.Close()
			}
		}
		s.deliver(b)
	}
}

// abortAll aborts the batches in flight and those given: their
// connections stay with this generation.
func (s *hoSender) abortAll(more ...*hoBatch) {
	all := append(s.flight, more...)
	s.flight = nil
	clear(s.byID)
	for _, b := range all {
		for _, o := range b.offers {
			s.failed++
			s.failedErr = s.broken
			o.err = fmt.Errorf("%w: %v; the connection stays with this generation", ErrAborted, s.broken)
		}
	}
	for _, b := range all {
		s.finish(b)
	}
}

// finish hands b's outcomes to its Offers, having logged the figures first
// if nothing else is in flight or waiting: a program may exit as soon as
// its last Offer returns.
func (s *hoSender) finish(b *hoBatch) {
	s.reportIfIdle()
	s.deliver(b)
}

// reportIfIdle reports if nothing else is in flight or waiting: the
// offers that came together are through.
func (s *hoSender) reportIfIdle() {
	if len(s.flight) == 0 && len(s.offers) == 0 {
		s.report()
	}
}

// deliver hands b's outcomes to its Offers.
func (s *hoSender) deliver(b *hoBatch) {
	for _, o := range b.offers {
		o.res <- o.err
	}
}

// report logs what happened since the last report: once the offers that
// came together are through.
func (s *hoSender) report() {
	log := s.h.u.log
	took := time.Since(s.start)
	if s.committed > 0 {
		log.Info("connections handed over to the new generation", "event", "handover.committed", "conns", s.committed,
			"took_ms", took.Milliseconds(), "per_s", int(float64(s.committed)/max(took.Seconds(), 1e-6)),
			"cpu_ms", (processCPU() - s.startCPU).Milliseconds())
	}
	if s.refused > 0 {
		log.Warn("the new generation refused connections: they drain", "event", "handover.refused", "conns", s.refused, "why", s.refusedWhy)
	}
	if s.failed > 0 {
		log.Warn("handover aborted before commit: those connections drain", "event", "handover.aborted", "conns", s.failed, "err", s.failedErr)
	}
	s.start, s.committed, s.refused, s.failed = time.Time{}, 0, 0, 0
}

// processCPU is the CPU time this process has used, user and system: the
// cost of a handover, whatever else runs on the machine (the old
// generation does little else meanwhile).
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
