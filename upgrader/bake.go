package upgrader

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// The bake window (Options.Bake), handoff's own: tableflip hands over as soon
// as the child writes to its ready pipe, and closes the parent's copies of
// the sockets then, after which it cannot start another child. So a child
// that bakes says it is ready on the control channel first, serves, and
// calls tableflip's Ready only once the parent has seen it serve and
// answered "baked". Until then tableflip's Upgrade in the parent is still
// waiting, and a child killed meanwhile is, for tableflip, one that exited
// before it was ready: the parent keeps its sockets and may upgrade again.
//
// What the parent looks at, every bakeTick:
//
//   - the child's counts of what its Drainers did ("serving A R N" on the
//     control channel: accepted, requests, answered). One answered request
//     proves it serves.
//   - the accept queues of its TCP listening sockets (Linux, TCP_INFO).
//     Since the parent has paused its own accepting, a connection that
//     waits there for bakeStuck shows a child that takes none.
//   - its own "OPTIONS *" on one of the sockets, which net/http answers
//     without a handler: where no request comes, an answer to it, then
//     bakeQuiet with no request reaching the child, proves it serves.
//
// A shared socket is served by every generation that holds it: only what the
// new process alone holds proves it is ready. That is why the parent steps
// aside, and why only the child's own counts, or a queue the child alone
// empties, count.
const (
	bakeTick       = 20 * time.Millisecond
	bakeStuck      = 500 * time.Millisecond
	bakeNoAnswer   = 2 * time.Second
	bakeMinPending = 3
	bakeQuiet      = 300 * time.Millisecond
	bakeReportTick = 10 * time.Millisecond
	probeTimeout   = 2 * time.Second
)

func (u *Upgrader) addDrainer(d *drain.Drainer) {
	u.sockMu.Lock()
	defer u.sockMu.Unlock()
	if !slices.Contains(u.drainers, d) {
		u.drainers = append(u.drainers, d)
	}
}

func (u *Upgrader) drainerList() []*drain.Drainer {
	u.sockMu.Lock()
	defer u.sockMu.Unlock()
	return slices.Clone(u.drainers)
}

// resume ends the pause of this generation's Drainers: it accepts again.
func (u *Upgrader) resume() {
	for _, d := range u.drainerList() {
		d.Resume()
	}
}

// activity sums what this generation's Drainers did.
func activity(ds []*drain.Drainer) drain.Activity {
	var sum drain.Activity
	for _, d := range ds {
		a := d.Activity()
		sum.Accepted += a.Accepted
		sum.Requests += a.Requests
		sum.Answered += a.Answered
	}
	return sum
}

// bakeWatch is the parent's view of one bake window.
type bakeWatch struct {
	u         *Upgrader
	pid       int
	counts    bool // the child reports its Drainers' counts
	start     time.Time
	own       []*drain.Drainer // this generation's, paused
	ownBefore uint64           // what they had accepted at the last look

	child       drain.Activity
	firstReq    time.Time // when the child was first seen with a request
	lastQ       int       // the accept queues at the last look
	queuedSince time.Time // when they were last seen going from empty, or shrinking
	accepted    bool      // the child was seen taking a connection
	probed      time.Time // the probe was answered then (by the child)
}

// bake runs the bake window of the child pid, which said it is ready. It
// returns the proof that it serves, or why it does not. lines carries the
// child's messages; coreC tableflip's end of the upgrade, which comes
// during the bake only if the child exited (or, from a child that does not
// wait for "baked", was ready): consumed is set then.
func (u *Upgrader) bake(pid int, counts bool, lines <-chan []string, coreC <-chan error) (proof string, fail error, coreErr error, consumed bool) {
	w := &bakeWatch{u: u, pid: pid, counts: counts, start: time.Now(), own: u.drainerList()}
	for _, d := range w.own {
		d.Pause()
	}
	w.ownBefore = activity(w.own).Accepted
	u.log.Info("baking: the new generation must prove it serves; this one serves on", "event", "bake.started",
		"child_pid", pid, "bake_s", u.opts.Bake.Seconds(), "counts", counts)
	probeC := make(chan probeResult, 1)
	probeOnce := func() {
		before := activity(w.own).Accepted
		r := u.probe()
		// This generation may take one connection as it pauses (from a
		// listener without deadlines): if it took one, it may have been
		// the probe's, which then proves nothing of the new generation.
		r.ours = activity(w.own).Accepted != before
		probeC <- r
	}
	go probeOnce()
	var reprobe <-chan time.Time
	window := time.NewTimer(u.opts.Bake)
	defer window.Stop()
	tick := time.NewTicker(bakeTick)
	defer tick.Stop()
	for {
		select {
		case f, ok := <-lines:
			if !ok {
				lines = nil // the child closed the channel: it exits, which coreC tells
				continue
			}
			if a, ok := parseServing(f); ok {
				w.child = a
				if a.Requests > 0 && w.firstReq.IsZero() {
					w.firstReq = time.Now()
				}
			}
		case r := <-probeC:
			switch {
			case r.ours:
				go probeOnce() // the pause holds now: again
			case r.err != nil:
				u.log.Info("bake: the probe got no answer; probing again in a second", "event", "bake.probe", "child_pid", pid, "err", r.err)
				reprobe = time.After(time.Second)
			default:
				w.probed = time.Now()
			}
		case <-reprobe:
			reprobe = nil
			go probeOnce()
		case err := <-coreC:
			if err != nil {
				cause := err
				var ue *UpgradeError
				if errors.As(err, &ue) && ue.Cause != nil {
					cause = ue.Cause
				}
				return "", fmt.Errorf("it exited while baking: %w", cause), err, true
			}
			return "it told tableflip it was ready without waiting for its bake", nil, nil, true
		case <-window.C:
			return "", fmt.Errorf("it proved nothing within the %v bake window (%s)", u.opts.Bake, w.summary()), nil, false
		case <-tick.C:
		}
		if proof, fail := w.look(); proof != "" || fail != nil {
			return proof, fail, nil, false
		}
	}
}

// look checks what was seen and returns the proof, or why the child does
// not serve, or neither yet.
func (w *bakeWatch) look() (proof string, fail error) {
	now := time.Now()
	if w.child.Answered > 0 {
		return fmt.Sprintf("it answered requests (%d so far)", w.child.Answered), nil
	}
	q, ok := acceptQueue(w.u.socketList())
	if ok {
		own := activity(w.own).Accepted
		switch {
		case q == 0:
			w.queuedSince = time.Time{}
		case w.queuedSince.IsZero() || q < w.lastQ:
			w.queuedSince = now
		}
		if q < w.lastQ && own == w.ownBefore {
			w.accepted = true
		}
		w.ownBefore, w.lastQ = own, q
		if q > 0 && now.Sub(w.queuedSince) >= bakeStuck {
			return "", fmt.Errorf("it takes no connection: %d waited in the accept queue for %v", q, bakeStuck)
		}
	}
	if w.child.Accepted > 0 {
		w.accepted = true
	}
	pending := w.child.Requests - w.child.Answered
	if pending >= bakeMinPending && now.Sub(w.firstReq) >= bakeNoAnswer {
		return "", fmt.Errorf("it answers nothing: %d requests got no answer in %v", pending, bakeNoAnswer)
	}
	switch {
	case !w.counts && w.accepted:
		return "it took connections off the sockets (it has no Drainer to count answers)", nil
	case w.child.Requests == 0 && !w.probed.IsZero() && now.Sub(w.probed) >= bakeQuiet:
		return fmt.Sprintf("it answered this generation's probe, and no request came in %v", bakeQuiet), nil
	}
	return "", nil
}

func (w *bakeWatch) summary() string {
	return fmt.Sprintf("accepted %d, requests %d, answered %d; probe answered: %v", w.child.Accepted, w.child.Requests, w.child.Answered, !w.probed.IsZero())
}

// parseServing parses "serving ACCEPTED REQUESTS ANSWERED".
func parseServing(f []string) (drain.Activity, bool) {
	if len(f) != 4 || f[0] != "serving" {
		return drain.Activity{}, false
	}
	var n [3]uint64
	for i := range n {
		v, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return drain.Activity{}, false
		}
		n[i] = v
	}
	return drain.Activity{Accepted: n[0], Requests: n[1], Answered: n[2]}, true
}

func (u *Upgrader) socketList() []any {
	u.sockMu.Lock()
	defer u.sockMu.Unlock()
	out := make([]any, len(u.sockets))
	for i, s := range u.sockets {
		out[i] = s
	}
	return out
}

type probeResult struct {
	err  error
	ours bool // this generation accepted a connection meanwhile
}

// probe sends "OPTIONS * HTTP/1.1" on the first stream listener, which only
// the child accepts while this generation is paused, and waits for the
// start of an answer ("HTTP/"): net/http answers it without a handler. A
// TLS server answers with a 400 in plain HTTP, which serves as well.
func (u *Upgrader) probe() probeResult {
	u.sockMu.Lock()
	lns := slices.Clone(u.listeners)
	u.sockMu.Unlock()
	if len(lns) == 0 {
		return probeResult{err: errors.New("no stream listener to probe")}
	}
	network, addr := lns[0].Addr().Network(), lns[0].Addr().String()
	if ta, ok := lns[0].Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		lo := net.IPv6loopback
		if ta.IP.To4() != nil {
			lo = net.IPv4(127, 0, 0, 1)
		}
		addr = net.JoinHostPort(lo.String(), strconv.Itoa(ta.Port))
	}
	c, err := net.DialTimeout(network, addr, probeTimeout)
	if err != nil {
		return probeResult{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := io.WriteString(c, "OPTIONS * HTTP/1.1\r\nHost: handoff-bake-probe\r\nConnection: close\r\n\r\n"); err != nil {
		return probeResult{err: err}
	}
	var b [5]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return probeResult{err: err}
	}
	if string(b[:]) != "HTTP/" {
		return probeResult{err: fmt.Errorf("not an HTTP answer: %q", b[:])}
	}
	return probeResult{}
}

// reportWhileBaking is the child's side of the bake: it sends its Drainers'
// counts to the parent as they change, until the parent answers "baked" —
// then it tells tableflip it is ready (which writes the PID file and lets
// the parent's upgrade end) — or goes away, which makes it the main process.
func (u *Upgrader) reportWhileBaking() {
	got := make(chan error, 1)
	go func() {
		for {
			f, err := u.parentCtl.recv(time.Time{})
			if err != nil {
				got <- err
				return
			}
			if len(f) == 1 && f[0] == "baked" {
				got <- nil
				return
			}
		}
	}()
	ds := u.drainerList()
	if len(ds) == 0 {
		u.endBake(<-got) // nothing to count
		return
	}
	tick := time.NewTicker(bakeReportTick)
	defer tick.Stop()
	last, sent := drain.Activity{}, false
	for {
		select {
		case err := <-got:
			u.endBake(err)
			return
		case <-tick.C:
		}
		if a := activity(ds); a != last || !sent {
			last, sent = a, true
			_ = u.parentCtl.send("serving %d %d %d", a.Accepted, a.Requests, a.Answered)
		}
	}
}

// endBake finishes Ready once the bake is over: parentErr is nil when the
// parent said "baked", else why the parent could not be read (it died).
func (u *Upgrader) endBake(parentErr error) {
	err := u.readyCore()
	switch {
	case err == nil && parentErr == nil:
		u.log.Info("baked: the previous generation hands over", "event", "bake.passed")
		go u.followParent()
	case err == nil || errors.Is(err, errParentUnreachable):
		u.becomeMain("the previous generation exited during the bake window")
	default:
		u.log.Error("cannot finish Ready after the bake window", "event", "bake.ready_failed", "err", err)
		return
	}
	u.storeSockets()
}
