package upgrader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/systemd"
)

// attemptResult is what one upgrade attempt ended with.
type attemptResult struct {
	err   error
	pid   int
	child *ctl
}

// run is the one goroutine that owns the generation's state, a machine (see
// state.go and the state table in the package documentation): it turns what
// happens into events, and the machine's actions into calls. It lives as long
// as the process, so that signals are handled while the generation drains.
func (u *Upgrader) run() {
	refusal := u.canUpgrade()
	m := newMachine(u.parentPid, refusal, u.opts.StopDelay)
	var (
		ready      = u.readyC
		parentGone = u.parentGone
		stopC      = u.stopC
		attempt    chan attemptResult // non-nil while an attempt runs
		killTimer  *time.Timer
		killC      <-chan time.Time
		delayC     <-chan time.Time
	)
	for {
		var ev event
		select {
		case sig := <-u.sigC:
			if sig == syscall.SIGHUP {
				ev = evHUP{}
			} else {
				ev = evStopSignal{sig: sig.String(), drained: u.drained.Load()}
			}
		case w := <-u.upgradeC:
			ev = evUpgradeCall{w}
		case <-stopC:
			stopC, ev = nil, evStopCall{}
		case <-ready:
			ready, ev = nil, evReady{}
		case <-parentGone:
			parentGone, ev = nil, evParentGone{}
		case <-u.statC:
			st := u.parentStat.Load()
			if st == nil {
				continue
			}
			ev = evParentStatus{*st}
		case <-killC:
			killC, ev = nil, evKillDue{}
		case <-delayC:
			delayC, ev = nil, evDelayOver{}
		case res := <-attempt:
			attempt, ev = nil, evAttemptDone{res}
		}
		for _, a := range m.step(ev) {
			switch a := a.(type) {
			case actLog:
				u.log.Log(context.Background(), a.level, a.msg, append([]any{"event", a.event}, a.args...)...)
			case actReply:
				if refusal != nil && a.err == refusal {
					u.book.do(func(c *counters) { c.Refused++ })
				}
				for _, w := range a.ws {
					reply(w, a.err)
				}
			case actStartAttempt:
				attempt = make(chan attemptResult, 1)
				go func(c chan<- attemptResult) { c <- u.attempt() }(attempt)
			case actBeginStop:
				u.beginStop()
			case actHandOver:
				u.handOver(a.res)
			case actPassOnUpgrade:
				if err := a.res.child.send("upgrade"); err != nil {
					u.log.Warn("cannot pass the queued upgrade on to the new generation; signal it again", "event", "upgrade.pass_on_failed", "child_pid", a.res.pid, "err", err)
				}
			case actStopChild:
				if a.res.pid > 0 {
					_ = kill(a.res.pid, syscall.SIGTERM)
				}
				a.res.child.close()
				u.resume() // it paused for the new generation's bake

			case actCutDrain:
				closeOnce(u.cutC)
			case actExitNow:
				os.Exit(1)
			case actKillParent:
				_ = kill(u.parentPid, syscall.SIGKILL)
			case actArmKill:
				killTimer = time.NewTimer(time.Until(a.at))
				killC = killTimer.C
			case actDisarmKill:
				if killTimer != nil {
					killTimer.Stop()
				}
				killC = nil
			case actStopAsked:
				u.stopAsked.Store(true)
				if _, err := systemd.Stopping(u.status(fmt.Sprintf("stopping in %v (stop delay)", a.delay))); err != nil {
					u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
				}
				delayC = time.After(a.delay)
			}
		}
	}
}

// beginStop starts a real stop: tell systemd, close Exit, and have tableflip
// refuse upgrades and remove the Unix socket files this generation created.
func (u *Upgrader) beginStop() {
	if !u.stopAsked.Swap(true) {
		if _, err := systemd.Stopping(u.status("stopping")); err != nil {
			u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
		}
	}
	if u.parentServes() {
		// The previous generation serves these very sockets, and serves
		// on: they are left as they are, neither held back (a socket
		// filter would stay on them) nor, by tableflip's stop, closed and
		// their files removed.
		u.leftToParent.Store(true)
		u.log.Warn("stopping before this generation was ready: the previous generation serves on, with the sockets as they are", "event", "stop.not_ready")
		close(u.exitC)
		return
	}
	u.holdBack(u.releaseStore())
	u.core.Stop()
	close(u.exitC)
}

// readyCore tells tableflip that this generation is ready, which tells
// the previous one to hand over, and records that it was told (or had
// died): parentServes is false from then on.
func (u *Upgrader) readyCore() error {
	err := u.core.Ready()
	if err == nil || errors.Is(err, errParentUnreachable) {
		u.toldParent.Store(true)
	}
	return err
}

// parentServes reports whether this generation was started by an upgrade
// whose previous generation was not told to hand over (Ready failed, or
// did not come) and still runs: that one serves the same sockets.
func (u *Upgrader) parentServes() bool {
	if u.parentCtl == nil || u.toldParent.Load() {
		return false
	}
	select {
	case <-u.parentGone:
		return false
	default:
		return true
	}
}

// handOver ends this generation's service after a successful upgrade.
func (u *Upgrader) handOver(res attemptResult) {
	u.childCtl.Store(res.child)
	u.handedOver.Store(true)
	close(u.exitC)
}

// reportDrain tells the generation we handed over to how our drain goes, so
// that an upgrade it queues can say what it waits for.
func (u *Upgrader) reportDrain(conns int, deadline time.Time) {
	if c := u.childCtl.Load(); c != nil {
		_ = c.send("drain %d %d", conns, deadline.UnixMilli())
	}
}

// reply answers w, unless it is nil (an upgrade nobody waits for).
func reply(w chan error, err error) {
	if w != nil {
		w <- err
	}
}

// by names who asked for an upgrade: a caller of Upgrade, or (nil) the
// previous generation, which passed on one queued during its own upgrade.
func by(w chan error) string {
	if w == nil {
		return "the previous generation (queued during its upgrade)"
	}
	return "Upgrade"
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}
