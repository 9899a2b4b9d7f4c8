package upgrader

import (
	"context"
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

// run is the one goroutine that owns the generation's state; see the state
// table in the package documentation. It lives as long as the process, so
// that signals are handled while the generation drains.
func (u *Upgrader) run() {
	var (
		ready      = u.readyC
		parentGone = u.parentGone
		waiters    []chan error // callers and signals wanting the next upgrade
		wanted     bool
		// queued: an upgrade was asked after the attempt in progress had
		// started its process; it runs once that attempt has ended (in the
		// new generation, if it succeeded), so a binary replaced meanwhile
		// is picked up. queuedWaiters wait for it.
		queued        bool
		queuedWaiters []chan error
		attempt       chan attemptResult // non-nil while an attempt runs
		waitLogged    bool
		killTimer     *time.Timer
		killC         <-chan time.Time
		stopping      bool
		stops         int // stop signals received
		waitLogC      <-chan time.Time
		waitLogDue    bool
		stopC         = u.stopC
		// refusalLogged: the log said once that upgrades cannot work here.
		refusalLogged bool
	)
	answer := func(err error) {
		for _, w := range waiters {
			if w != nil {
				w <- err
			}
		}
		waiters, wanted = nil, false
	}
	for {
		select {
		case sig := <-u.sigC:
			switch sig {
			case syscall.SIGHUP:
				switch {
				case u.handedOver.Load():
					u.log.Info("SIGHUP ignored: this generation has handed over; signal the newest one")
				case stopping:
					u.log.Info("SIGHUP ignored: stopping")
				case attempt != nil:
					u.log.Info("upgrade asked", "signal", "SIGHUP", "queued", "after the upgrade in progress")
					queued = true
				case wanted:
					u.log.Info("upgrade asked", "signal", "SIGHUP", "joins", "the pending upgrade")
				default:
					u.log.Info("upgrade asked", "signal", "SIGHUP")
					wanted, waitLogged = true, false
				}
			default: // SIGTERM, SIGINT
				stops++
				switch {
				case stops >= 3:
					u.log.Warn("third stop signal: exiting now", "signal", sig.String())
					os.Exit(1)
				case (stops == 2 || stopping) && u.drained.Load():
					u.log.Info("stop signal again; the drain is over already", "signal", sig.String())
				case stops == 2 || stopping:
					u.log.Warn("stop signal again: cutting the drain short", "signal", sig.String())
					closeOnce(u.cutC)
				case u.handedOver.Load():
					u.log.Info("stop asked; already draining after the handover", "signal", sig.String())
				default:
					u.log.Info("stop asked", "signal", sig.String())
					stopping = true
					u.beginStop()
					answer(ErrStopped)
				}
			}

		case w := <-u.upgradeC:
			switch {
			case u.handedOver.Load():
				// Upgrade also selects on Exit, but may reach us first.
				reply(w, ErrHandedOver)
			case stopping:
				reply(w, ErrStopped)
			case ready != nil && w != nil:
				w <- ErrNotReady
			case attempt != nil:
				if !queued {
					u.log.Info("upgrade asked", "by", by(w), "queued", "after the upgrade in progress")
				}
				queued = true
				queuedWaiters = append(queuedWaiters, w)
			default:
				if !wanted {
					u.log.Info("upgrade asked", "by", by(w))
					waitLogged = false
				}
				wanted = true
				waiters = append(waiters, w)
			}

		case <-stopC:
			stopC = nil
			if !stopping && !u.handedOver.Load() {
				u.log.Info("stop asked", "by", "Stop")
				stopping = true
				u.beginStop()
				answer(ErrStopped)
			}

		case <-ready:
			ready = nil

		case <-parentGone:
			parentGone = nil
			if killTimer != nil {
				killTimer.Stop()
				killC = nil
			}
			if wanted {
				u.log.Info("previous generation exited; upgrading", "prev_pid", u.parentPid)
			}

		case <-u.statC:

		case <-waitLogC:
			waitLogC, waitLogDue = nil, true

		case <-killC:
			killC = nil
			if parentGone != nil {
				u.log.Warn("previous generation still running past its drain deadline; killing it", "prev_pid", u.parentPid)
				_ = kill(u.parentPid, syscall.SIGKILL)
			}

		case res := <-attempt:
			attempt = nil
			if stopping {
				if res.err == nil {
					// The new generation became ready just as the stop
					// began: it must not outlive this one.
					u.log.Warn("stopping: stopping the new generation that just became ready too", "child_pid", res.pid)
					if res.pid > 0 {
						_ = kill(res.pid, syscall.SIGTERM)
					}
					res.child.close()
				}
				answer(ErrStopped)
				for _, w := range queuedWaiters {
					reply(w, ErrStopped)
				}
				queued, queuedWaiters = false, nil
				continue
			}
			answer(res.err)
			switch {
			case !queued:
			case res.err != nil:
				u.log.Info("starting the upgrade queued during the failed one")
				wanted, waiters, waitLogged = true, queuedWaiters, false
			default:
				// The new generation carries out the queued upgrade; this
				// one has handed over, as its callers are told.
				u.log.Info("the new generation carries out the upgrade queued during this one", "child_pid", res.pid)
				if err := res.child.send("upgrade"); err != nil {
					u.log.Warn("cannot pass the queued upgrade on to the new generation; signal it again", "child_pid", res.pid, "err", err)
				}
				for _, w := range queuedWaiters {
					reply(w, nil)
				}
			}
			if queued {
				queued, queuedWaiters = false, nil
			}
			if res.err == nil {
				u.handOver(res)
			}
		}

		if !wanted || attempt != nil || stopping || u.handedOver.Load() || ready != nil {
			continue
		}
		if parentGone != nil {
			st := u.parentStat.Load()
			if st != nil && killTimer == nil {
				killTimer = time.NewTimer(time.Until(st.deadline) + parentKillGrace)
				killC = killTimer.C
			}
			if st == nil && waitLogC == nil && !waitLogged {
				// The predecessor reports its drain within moments of our
				// Ready; give it that long before logging without it.
				waitLogC = time.After(time.Second)
				continue
			}
			if !waitLogged && (st != nil || waitLogDue) {
				waitLogged = true
				args := []any{"prev_pid", u.parentPid}
				if st != nil {
					args = append(args, "prev_conns", st.conns, "prev_deadline", st.deadline.Format(time.RFC3339))
				}
				u.log.Info("upgrade waits for the previous generation to finish draining", args...)
			}
			continue
		}
		if err := u.core.CanUpgrade(); err != nil {
			if !refusalLogged {
				refusalLogged = true
				u.log.Warn("upgrade refused; still serving", "err", err)
			}
			answer(err)
			continue
		}
		attempt = make(chan attemptResult, 1)
		go func(c chan<- attemptResult) { c <- u.attempt() }(attempt)
	}
}

// beginStop starts a real stop: tell systemd, close Exit, and have tableflip
// refuse upgrades and remove the Unix socket files this generation created.
func (u *Upgrader) beginStop() {
	if _, err := systemd.Stopping(u.status("stopping")); err != nil {
		u.log.Warn("sd_notify failed", "err", err)
	}
	u.core.Stop()
	close(u.exitC)
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

// pingWatchdog sends WATCHDOG=1 every half of the interval while this
// generation is systemd's main process.
func (u *Upgrader) pingWatchdog() {
	select {
	case <-u.becameMain:
	case <-u.exitC:
		return
	}
	t := time.NewTicker(u.watchdog / 2)
	defer t.Stop()
	for {
		if u.handedOver.Load() {
			return
		}
		if err := u.checkHealth(); err != nil {
			u.log.Warn("watchdog ping skipped: health check failed", "err", err)
		} else if _, err := systemd.Watchdog(); err != nil {
			u.log.Warn("sd_notify failed", "err", err)
		}
		<-t.C
	}
}

func (u *Upgrader) checkHealth() error {
	if u.opts.WatchdogCheck == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.watchdog/4)
	defer cancel()
	if err := u.opts.WatchdogCheck(ctx); err != nil {
		return fmt.Errorf("watchdog check: %w", err)
	}
	return nil
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
