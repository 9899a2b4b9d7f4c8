//go:build linux

package probe

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/internal/sockdiag"
)

// What the bake window checks. While a new generation bakes beside the
// serving one, handoff looks at it every bakeTick and rolls it back — stops
// it, and the serving generation serves on — as soon as it is shown not to
// serve:
//
//   - it exits (any status);
//   - it takes no connection: while the serving generation is paused
//     (SIGSTOP to its process group) for at most bakeProbeFor, connections
//     wait in the sockets' accept queue for bakeQueueStuck and it takes none
//     — a program that says READY=1 and never accepts, or whose event loop
//     is blocked. Until the new generation is seen holding a connection,
//     this probe runs every bakeProbeEvery; without traffic it shows
//     nothing. The paused generation's connections wait meanwhile: none is
//     lost, some answers come up to bakeProbeFor later;
//   - it answers nothing: at least bakeMinStuck of its connections got a
//     request bakeStuckAfter or more ago and no byte back since, none of its
//     connections has been answered, and none of the serving generation's
//     waits so (its requests are not all slow by nature) — handlers that all
//     block;
//   - the health check fails bakeHealthFails times in a row: --health, or the
//     --ready http:// or tcp:// probe, which reach an address only the new
//     generation serves.
//
// The connection checks read the kernel's view (sock_diag, /proc) and need
// Linux. A generation that serves some requests and fails others is not
// caught: that takes a health check that exercises what fails.
const (
	bakeTick        = 250 * time.Millisecond
	bakeProbeEvery  = 2 * time.Second
	bakeProbeFor    = 500 * time.Millisecond
	bakeQueueStuck  = 300 * time.Millisecond
	bakeMinStuck    = 3
	bakeStuckAfter  = 2 * time.Second
	bakeHealthFails = 3
)

// Baking is what Bake watches: a new process, and what serves beside it.
type Baking struct {
	New    *gen.Gen   // the process that bakes
	Old    *gen.Gen   // the generation serving beside it, its worker index's
	Others []*gen.Gen // every process serving beside it, Old among them: paused together for the probe
	// Exited is closed when New has exited.
	Exited <-chan struct{}
	// Health is the health check (--health, else an http or tcp --ready),
	// for New's worker index; its Kind is "" for none.
	Health  config.Ready
	Sockets []Socket        // the listening sockets
	Ports   map[uint16]bool // the local ports of the TCP ones
}

// Bake checks b.New until ctx ends (its bake window) or it exits, and returns
// why it does not serve at the first check that fails, or "" if none did.
// The reads of New, Old and Others are of their PID, N and W, which do not
// change once a process has started.
func Bake(ctx context.Context, b Baking, log *slog.Logger) string {
	w := &bakeWatch{b: b, log: log}
	w.start()
	tick := time.NewTicker(bakeTick)
	defer tick.Stop()
	client := Client()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-b.Exited:
			return ""
		case <-tick.C:
		}
		reason := w.look()
		if reason == "" {
			reason = w.health(ctx, client)
		}
		if reason != "" {
			return reason
		}
	}
}

// bakeWatch is the state of one bake window's checks.
type bakeWatch struct {
	b   Baking
	log *slog.Logger

	broken    bool            // the connection checks cannot run here
	newSeen   map[uint64]bool // connections g accepted
	lastProbe time.Time       // the last soloProbe
	accepts   bool            // a soloProbe saw g take connections
	answered  map[uint64]bool // those that got data back
	fails     int             // health checks failed in a row
	lastErr   string
}

func (w *bakeWatch) start() {
	w.newSeen, w.answered = map[uint64]bool{}, map[uint64]bool{}
	// A first probe a moment into the window, not at once: the new
	// generation's accept loop may still be settling.
	w.lastProbe = time.Now().Add(bakeTick - bakeProbeEvery)
	if _, err := sockdiag.TCPConns(w.b.Ports); err != nil || len(w.b.Ports) == 0 {
		w.broken = true
		if err != nil {
			w.log.Warn("bake: the connection checks cannot run; only an exit and the health check count", "event", "bake.checks_off", "gen", w.b.New.N, "err", err)
		}
	}
}

// look runs the connection checks and returns why g does not serve, or "".
func (w *bakeWatch) look() string {
	if w.broken {
		return ""
	}
	conns, err := sockdiag.TCPConns(w.b.Ports)
	if err != nil {
		return ""
	}
	pending := 0
	for ino := range held(w.b.New.PID, conns) {
		w.newSeen[ino] = true
		c := conns[ino]
		if c.SegsOut > 0 {
			w.answered[ino] = true
		}
		if c.Pending(bakeStuckAfter) {
			pending++
		}
	}
	oldPending := 0
	for ino := range held(w.b.Old.PID, conns) {
		if conns[ino].Pending(bakeStuckAfter) {
			oldPending++
		}
	}
	if pending >= bakeMinStuck && len(w.answered) == 0 && oldPending == 0 {
		return fmt.Sprintf("answers nothing: %d of its connections got a request %v or more ago and no byte back, and it has answered none of the %d it accepted",
			pending, bakeStuckAfter, len(w.newSeen))
	}
	if len(w.newSeen) == 0 && !w.accepts && time.Since(w.lastProbe) >= bakeProbeEvery {
		w.lastProbe = time.Now()
		var why string
		why, w.accepts = w.soloProbe()
		return why
	}
	return ""
}

// soloProbe pauses the serving generation for at most bakeProbeFor, so that
// only g can take connections off the sockets, and returns why g does not:
// connections waited in the accept queue for bakeQueueStuck, and it took
// none and holds none. accepts reports that g was seen taking connections
// (no more probes are needed); both are zero when no connection came. The
// serving generation is resumed before it returns.
func (w *bakeWatch) soloProbe() (why string, accepts bool) {
	inodes := map[uint64]bool{}
	for _, sk := range w.b.Sockets {
		inodes[sk.Inode] = true
	}
	if q, err := sockdiag.AcceptQueue(inodes); err != nil || q > 0 {
		return "", false // the serving generation lags already: no time to pause it
	}
	// Every process that serves beside g pauses, or another worker would
	// take what g does not.
	for _, o := range w.b.Others {
		if err := unix.Kill(-o.PID, unix.SIGSTOP); err != nil {
			for _, p := range w.b.Others {
				_ = unix.Kill(-p.PID, unix.SIGCONT)
			}
			return "", false
		}
	}
	defer func() {
		for _, o := range w.b.Others {
			_ = unix.Kill(-o.PID, unix.SIGCONT)
		}
	}()
	start := time.Now()
	var since time.Time // since when connections have waited
	last := 0
	for time.Since(start) < bakeProbeFor {
		q, err := sockdiag.AcceptQueue(inodes)
		switch {
		case err != nil:
			return "", false
		case q < last:
			return "", true // it takes them
		case q == 0:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= bakeQueueStuck:
			if conns, err := sockdiag.TCPConns(w.b.Ports); err != nil || len(held(w.b.New.PID, conns)) > 0 {
				return "", true // it holds one: busy, not deaf
			}
			paused := fmt.Sprintf("generation %d paused", w.b.Old.N)
			if len(w.b.Others) > 1 {
				paused = fmt.Sprintf("the %d processes serving beside it paused", len(w.b.Others))
			}
			return fmt.Sprintf("takes no connection: with %s, %d connections waited %v in the accept queue and it took none",
				paused, q, bakeQueueStuck.Round(time.Millisecond)), false
		}
		last = q
		time.Sleep(10 * time.Millisecond)
	}
	return "", false
}

// health runs the health check, if any, and returns why g failed it
// bakeHealthFails times in a row, or "".
func (w *bakeWatch) health(ctx context.Context, client *http.Client) string {
	m := w.b.Health
	if m.Kind == "" {
		return ""
	}
	if check(ctx, client, m) {
		w.fails = 0
		return ""
	}
	w.fails++
	if w.fails >= bakeHealthFails {
		return fmt.Sprintf("failed the health check %s %d times in a row", m, w.fails)
	}
	return ""
}

// Held returns how many of the TCP connections on ports (accepted, not
// closed) the process tree of root holds, or -1 if they cannot be listed.
func Held(root int, ports map[uint16]bool) int {
	conns, err := sockdiag.TCPConns(ports)
	if err != nil {
		return -1
	}
	return len(held(root, conns))
}

// held returns the connections of conns that the process tree of root
// holds.
func held(root int, conns map[uint64]sockdiag.Conn) map[uint64]bool {
	out := map[uint64]bool{}
	pids, err := procfs.ProcessTree(root)
	if err != nil {
		return out
	}
	for ino := range procfs.SocketInodes(pids) {
		if _, ok := conns[ino]; ok {
			out[ino] = true
		}
	}
	return out
}
