//go:build linux

package probe

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/internal/sockdiag"
)

// What the liveness checks look at. While a process serves, handoff looks
// at it every liveTick (--hung-after > 0) and reports it unresponsive —
// the machine then pauses it and replaces it, a new one ready first — when
// it is shown hung:
//
//   - it answers nothing: for the bar it has made no progress — sent no
//     byte on any of its connections, closed none, read no more of a
//     request it had not answered — while at least liveMinWaiting of its
//     connections got a request after its last progress and wait for the
//     answer, the last of them in the bar's second half. Requests keep
//     coming and none is answered: handlers that block on a deadlock or a
//     stuck dependency, an event loop that never returns. A busy process
//     answers some; a long-polling one holds old requests but gets no new
//     ones on them until it answers; slow requests that came together and
//     nothing after are work under way;
//   - it takes no connection: connections have waited in the sockets'
//     accept queue for the bar, the queue never shrinking, and it took
//     none meanwhile;
//
// The bar is --hung-after, or twice the longest a request was seen to
// wait for its answer, whichever is longer: the program's own pace.
//   - it fails the health check (--health, or the --ready http:// or tcp://
//     probe) liveHealthFails times in a row, checked every liveHealthEvery.
//
// The connection checks read the kernel's view (sock_diag, /proc) as the
// bake's do. A look costs in proportion to the connections: at 10,000, about
// 120 ms of CPU (the dump of every connection, and a readlink of each of the
// process's descriptors to tell whose it is), which every 250 ms was half a
// CPU taken from the program. So the looks are spaced to cost at most
// 1/liveBudget of the time (lookEvery), but never further apart than
// --hung-after, and put off while connections move between generations
// (putOff): detection takes up to that much longer under many connections,
// and a wait is measured without the spacing (unspaced).
//
// What they cannot tell apart: a program whose clients send on
// long-lived connections and never get a byte back (a telemetry sink that
// never acknowledges) looks hung once three such clients send after its
// last answer; turn the checks off for it (--hung-after 0), or give
// --health.
const (
	liveTick        = 250 * time.Millisecond
	liveMinWaiting  = 3
	liveHealthEvery = time.Second
	liveHealthFails = 3
	// liveBudget: a look's time, times liveBudget, is the least wait before
	// the next one (5%).
	liveBudget = 20
)

// putOff reports whether the look due at now is put off: busy (Busy said
// so) and busy since *since, which it keeps, for less than after. A look
// that is not put off starts the count again.
func putOff(now time.Time, busy bool, since *time.Time, after time.Duration) bool {
	if busy && since.IsZero() {
		*since = now
	}
	if busy && now.Sub(*since) < after {
		return true
	}
	*since = time.Time{}
	return false
}

// lookEvery is how long to wait after a look that took took: liveTick, or
// liveBudget times the look, up to after (--hung-after).
func lookEvery(took, after time.Duration) time.Duration {
	return max(liveTick, min(liveBudget*took, after))
}

// Proc is a serving process that WatchLive watches.
type Proc struct {
	G      *gen.Gen        // its PID and W are read, which do not change once it has started
	Exited <-chan struct{} // closed when it has exited
}

// Living is what WatchLive watches with.
type Living struct {
	After time.Duration // --hung-after: the bar's floor
	// Health is the health check (--health, else an http or tcp --ready),
	// before ForWorker; its Kind is "" for none.
	Health  config.Ready
	Sockets []Socket        // the listening sockets
	Ports   map[uint16]bool // the local ports of the TCP ones
	// Busy, if set, puts the looks off while it reports true, for at most
	// After in a row: while connections move from one generation to the
	// next, the new one is busy adopting them, not hung, and a look would
	// take CPU from the handover.
	Busy func() bool
}

// liveProc is what the checks know of one serving process.
type liveProc struct {
	p     Proc
	since time.Time // watched from
	// progress is when it was last seen to serve: a byte sent, a
	// connection closed, more of an unanswered request read.
	progress time.Time
	accepted time.Time                // when it last took a new connection
	prev     map[uint64]sockdiag.Conn // its connections at the last look
	fails    atomic.Int32             // health checks failed in a row
	stop     context.CancelFunc       // ends its health checks
	reported time.Time                // when it was last reported
	// closedWait is the longest a request waited on the connections it
	// closed since the last look.
	closedWait time.Duration
}

// WatchLive runs the liveness checks every liveTick (or less often; see
// below) until quit is closed,
// on the processes serving returns at each look, and sends an
// EvUnresponsive on events for each one shown hung (again at most once
// per l.After).
//
// A look that takes long (many connections) spaces the next ones out
// (lookEvery), which is logged once, as liveness.spaced. While l.Busy
// reports true, the looks are put off, for at most l.After in a row.
func WatchLive(quit <-chan struct{}, l Living, serving func() []Proc, events chan<- gen.Event, log *slog.Logger) {
	inodes := map[uint64]bool{}
	for _, sk := range l.Sockets {
		inodes[sk.Inode] = true
	}
	w := &liveWatch{log: log, after: l.After, ports: l.Ports, inodes: inodes, health: l.Health,
		procs: map[*gen.Gen]*liveProc{}, client: Client()}
	timer := time.NewTimer(liveTick)
	defer timer.Stop()
	defer w.forgetAll()
	spaced := false
	var busySince time.Time // since when Busy has put the looks off
	for {
		select {
		case <-quit:
			return
		case <-timer.C:
		}
		if putOff(time.Now(), l.Busy != nil && l.Busy(), &busySince, l.After) {
			timer.Reset(liveTick)
			continue
		}
		start := time.Now()
		evs := w.look(start, serving())
		took := time.Since(start)
		every := lookEvery(took, l.After)
		if every > 2*liveTick && !spaced {
			spaced = true
			log.Info("liveness: the connection checks are spaced out so that they cost little CPU", "event", "liveness.spaced",
				"look_ms", took.Milliseconds(), "every_ms", every.Milliseconds(), "conns", w.lastConns)
		}
		timer.Reset(every)
		for _, ev := range evs {
			select {
			case events <- ev:
			case <-quit:
				return
			}
		}
	}
}

// Client returns the HTTP client of the health checks: a second's timeout,
// no keep-alive.
func Client() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// liveWatch is the state of the liveness checks.
type liveWatch struct {
	log    *slog.Logger
	after  time.Duration
	ports  map[uint16]bool
	inodes map[uint64]bool
	health config.Ready
	client *http.Client
	procs  map[*gen.Gen]*liveProc
	// queueSince is since when connections have waited in the accept
	// queue without it shrinking; zero when it is empty.
	queueSince time.Time
	queueLast  int
	// off: sock_diag could not be read at the last look (out of
	// descriptors, say): only the health check counts until it can.
	off      bool
	lastLook time.Time
	// lastConns is how many connections the last look saw.
	lastConns int
	// slowest is the longest a request was seen to wait for its answer, on
	// a connection that stayed open: the program's own pace.
	slowest time.Duration
}

// unspaced is took, a request's wait measured from the last look to now,
// without what the looks' spacing added: the last send seen (or the close)
// may come long after the answer when the looks are further apart than
// liveTick (lookEvery, putOff), and the wait would read as the gap between
// them. Of the time past the last look, no more than liveTick counts, and
// never less than the wait seen then (pendingMs).
func (w *liveWatch) unspaced(now time.Time, took time.Duration, pendingMs uint32) time.Duration {
	if extra := now.Sub(w.lastLook) - liveTick; extra > 0 {
		return max(time.Duration(pendingMs)*time.Millisecond, took-extra)
	}
	return took
}

// bar is how long a process may answer nothing: --hung-after, or twice the
// slowest request seen answered, whichever is longer.
func (w *liveWatch) bar() time.Duration {
	return max(w.after, 2*w.slowest)
}

// look checks every process of serving once, and returns an event for each
// one found hung.
func (w *liveWatch) look(now time.Time, serving []Proc) []gen.Event {
	// Follow the serving set: new processes are watched from now, those
	// that no longer serve are forgotten.
	in := map[*gen.Gen]bool{}
	for _, p := range serving {
		in[p.G] = true
		if w.procs[p.G] == nil {
			w.watch(now, p)
		}
	}
	for g := range w.procs {
		if !in[g] {
			w.forget(g)
		}
	}
	if len(w.procs) == 0 {
		return nil
	}
	var conns map[uint64]sockdiag.Conn
	defer func() { w.lastConns = len(conns) }()
	queue := 0
	if len(w.ports) > 0 {
		var err error
		conns, err = sockdiag.TCPConns(w.ports)
		switch {
		case err != nil && !w.off:
			w.off = true
			w.log.Warn("liveness: the connection checks cannot run; only --health counts until they can", "event", "liveness.checks_off", "err", err)
		case err == nil && w.off:
			w.off = false
			w.log.Info("liveness: the connection checks run again", "event", "liveness.checks_on")
		}
		if err == nil {
			if q, err := sockdiag.AcceptQueue(w.inodes); err == nil {
				queue = q
			}
		}
	}
	switch {
	case queue == 0:
		w.queueSince = time.Time{}
	case w.queueSince.IsZero() || queue < w.queueLast:
		w.queueSince = now
	}
	w.queueLast = queue

	var out []gen.Event
	defer func() { w.lastLook = now }()
	for _, p := range w.procs {
		reason, args := w.judge(now, p, conns, queue)
		if reason == "" || now.Sub(p.reported) < w.after {
			continue
		}
		p.reported = now
		out = append(out, gen.EvUnresponsive{G: p.p.G, Reason: reason, Args: args})
	}
	return out
}

// judge updates what is known of p from conns and the accept queue, and
// returns why p is hung, with the evidence, or "".
func (w *liveWatch) judge(now time.Time, p *liveProc, conns map[uint64]sockdiag.Conn, queue int) (string, []any) {
	if conns != nil {
		mine := map[uint64]sockdiag.Conn{}
		if len(conns) > 0 {
			for ino := range held(p.p.G.PID, conns) {
				mine[ino] = conns[ino]
			}
		}
		for ino, c := range mine {
			if c.SegsOut > 0 {
				// Any byte sent is progress: an answer, or part of one.
				if t := now.Add(-time.Duration(c.LastSentMs) * time.Millisecond); t.After(p.progress) {
					p.progress = t
				}
			}
			was, seen := p.prev[ino]
			switch {
			case !seen:
				p.accepted = now
			case was.Pending(0) && c.SegsOut > was.SegsOut:
				// A request answered on a connection that stays open: how
				// long it waited tells how slow the program's requests are.
				asked := w.lastLook.Add(-time.Duration(was.LastRecvMs) * time.Millisecond)
				took := now.Add(-time.Duration(c.LastSentMs) * time.Millisecond).Sub(asked)
				if took = w.unspaced(now, took, was.LastRecvMs); took > w.slowest {
					w.slowest = took
				}
			case was.Pending(0) && c.SegsIn > was.SegsIn && c.RQueue == 0:
				// More data on a request it has not answered, and it read
				// it: a stream it consumes, not a handler that blocks.
				p.progress = now
			}
		}
		// What it closed since the last look is progress; a request it
		// had left unanswered there was answered (or given up) by now,
		// which tells how slow its requests are — counted at the next
		// look, once the process is seen alive: a process that dies
		// closes its connections too.
		if p.closedWait > 0 {
			if st, _, _, ok := procfs.Stat(p.p.G.PID); ok && st != "Z" && st != "X" {
				w.slowest = max(w.slowest, p.closedWait)
			}
			p.closedWait = 0
		}
		for ino, was := range p.prev {
			if _, ok := mine[ino]; !ok {
				p.progress = now
				if was.Pending(0) {
					waited := now.Sub(w.lastLook.Add(-time.Duration(was.LastRecvMs) * time.Millisecond))
					p.closedWait = max(p.closedWait, w.unspaced(now, waited, was.LastRecvMs))
				}
			}
		}
		// The connections with a request since its last progress,
		// unanswered, and when the first and the last of those came.
		waiting := 0
		var first, last time.Time
		for _, c := range mine {
			at := now.Add(-time.Duration(c.LastRecvMs) * time.Millisecond)
			if !c.Pending(0) || !at.After(p.progress) {
				continue
			}
			waiting++
			if first.IsZero() || at.Before(first) {
				first = at
			}
			if at.After(last) {
				last = at
			}
		}
		p.prev = mine
		// Hung, not busy: it has answered nothing for the bar, and
		// requests kept coming all along — the last in the bar's second
		// half. A few slow requests that came together, and nothing
		// after, are work under way.
		bar := w.bar()
		quiet := now.Sub(p.progress)
		if quiet >= bar && waiting >= liveMinWaiting && now.Sub(last) <= bar/2 && last.Sub(first) >= bar/2 {
			return fmt.Sprintf("answers nothing: %d of its connections got a request after it last answered, %v ago, and wait",
					waiting, quiet.Round(100*time.Millisecond)),
				[]any{"waiting", waiting, "quiet_ms", quiet.Milliseconds(), "conns", len(mine), "bar_ms", bar.Milliseconds()}
		}
		if queue > 0 && !w.queueSince.IsZero() && now.Sub(w.queueSince) >= bar && p.accepted.Before(w.queueSince) {
			stuck := now.Sub(w.queueSince)
			return fmt.Sprintf("takes no connection: %d connections have waited %v in the accept queue and it took none",
					queue, stuck.Round(100*time.Millisecond)),
				[]any{"accept_queue", queue, "queued_ms", stuck.Milliseconds(), "conns", len(mine)}
		}
	}
	if n := p.fails.Load(); n >= liveHealthFails {
		return fmt.Sprintf("failed the health check %s %d times in a row", w.health.ForWorker(p.p.G.W), n),
			[]any{"health", w.health.ForWorker(p.p.G.W).String(), "fails", n}
	}
	return "", nil
}

// watch starts watching pr.
func (w *liveWatch) watch(now time.Time, pr Proc) {
	p := &liveProc{p: pr, since: now, progress: now, accepted: now, prev: map[uint64]sockdiag.Conn{}}
	w.procs[pr.G] = p
	if w.health.Kind == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	m := w.health.ForWorker(pr.G.W)
	go func() {
		t := time.NewTicker(liveHealthEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-pr.Exited:
				return
			case <-t.C:
			}
			if check(ctx, w.client, m) {
				p.fails.Store(0)
			} else if ctx.Err() == nil {
				p.fails.Add(1)
			}
		}
	}()
}

func (w *liveWatch) forget(g *gen.Gen) {
	if p := w.procs[g]; p != nil && p.stop != nil {
		p.stop()
	}
	delete(w.procs, g)
}

func (w *liveWatch) forgetAll() {
	for g := range w.procs {
		w.forget(g)
	}
}
