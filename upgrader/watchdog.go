package upgrader

import (
	"context"
	"fmt"
	"time"

	"github.com/handoff-dev/handoff/systemd"
)

// WatchdogInterval returns the watchdog timeout systemd set for this
// service (WatchdogSec=), or 0. The Upgrader pings at half of it.
func (u *Upgrader) WatchdogInterval() time.Duration { return u.watchdog }

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
		if err := u.checkWatchdog(); err != nil {
			u.log.Warn("watchdog ping skipped: health check failed", "event", "watchdog.skipped", "err", err)
		} else if !u.ping() {
			return
		}
		<-t.C
	}
}

// ping sends one WATCHDOG=1 unless a new generation has been announced as
// the main process, and reports whether this one still is.
func (u *Upgrader) ping() bool {
	u.mainMu.Lock()
	defer u.mainMu.Unlock()
	if u.notMain {
		return false
	}
	if _, err := systemd.Watchdog(); err != nil {
		u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
	return true
}

// checkWatchdog runs Options.WatchdogCheck, if set, within a quarter of the
// interval.
func (u *Upgrader) checkWatchdog() error {
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
