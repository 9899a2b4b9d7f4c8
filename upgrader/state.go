package upgrader

import (
	"log/slog"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/internal/lifecycle"
)

// genState is a generation's state; the package documentation lists the
// states and their transitions, which step implements.
type genState int

const (
	stStarting   genState = iota // from New until Ready
	stReady                      // serving; no upgrade running
	stUpgrading                  // the next generation is starting
	stHandedOver                 // final: Exit is closed, this one drains
	stStopping                   // final: Exit is closed, this one drains
	stDelaying                   // a stop was asked; serving on for StopDelay
)

func (s genState) String() string {
	return [...]string{"Starting", "Ready", "Upgrading", "HandedOver", "Stopping", "Delaying"}[s]
}

// Events the run goroutine feeds to the machine.
type (
	evReady       struct{}
	evHUP         struct{}
	evUpgradeCall struct{ w chan error } // w nil: passed on by the parent
	evStopSignal  struct {
		sig     string
		drained bool // the drain has ended
	}
	evStopCall     struct{}
	evParentGone   struct{}
	evParentStatus struct{ st drainStatus }
	evKillDue      struct{}
	evDelayOver    struct{}
	evAttemptDone  struct{ res attemptResult }
)

// Actions the machine asks the run goroutine to carry out, in order.
type (
	actLog struct {
		level slog.Level
		event string
		msg   string
		args  []any
	}
	actReply struct {
		ws  []chan error // nil entries are skipped
		err error
	}
	actStartAttempt  struct{}
	actBeginStop     struct{}
	actHandOver      struct{ res attemptResult }
	actPassOnUpgrade struct{ res attemptResult }
	actStopChild     struct{ res attemptResult }
	actCutDrain      struct{}
	actExitNow       struct{}
	actKillParent    struct{}
	actArmKill       struct{ at time.Time }
	actDisarmKill    struct{}
	actStopAsked     struct{ delay time.Duration }
)

// machine is the generation's state and what goes with it. Only the run
// goroutine calls step; step does no I/O, so that tests can drive it.
type machine struct {
	state       genState
	attempting  bool // an attempt runs (also while Stopping, until it ends)
	parentPid   int
	parentAlive bool
	parent      *drainStatus // the predecessor's last drain report
	canUpgrade  error        // non-nil where upgrades cannot work
	stops       lifecycle.Stops

	wanted bool // an upgrade is asked and not started
	// q holds who waits for it, and the upgrade asked after the attempt in
	// progress had started: it runs once after it, in the new generation
	// if the attempt succeeded.
	q lifecycle.Queue[chan error]

	killSet     bool // the predecessor's kill timer was armed once
	killPending bool // and has not fired
	out         []action
}

func newMachine(parentPid int, canUpgrade error, stopDelay time.Duration) *machine {
	return &machine{state: stStarting, parentPid: parentPid, parentAlive: parentPid != 0, canUpgrade: canUpgrade, stops: lifecycle.Stops{Delay: stopDelay}}
}

// step applies ev and returns the actions to carry out, in order.
func (m *machine) step(ev event) []action {
	m.out = nil
	switch e := ev.(type) {
	case evReady:
		if m.state == stStarting {
			m.state = stReady
			if m.canUpgrade != nil {
				m.log(slog.LevelWarn, "upgrade.unavailable", "upgrades will be refused; restart to change the program", "err", m.canUpgrade)
			}
		}
	case evHUP:
		switch {
		case m.state == stHandedOver:
			m.log(slog.LevelInfo, "upgrade.ignored", "SIGHUP ignored: this generation has handed over; signal the newest one")
		case m.state == stStopping:
			m.log(slog.LevelInfo, "upgrade.ignored", "SIGHUP ignored: stopping")
		case m.state == stDelaying:
			m.log(slog.LevelInfo, "upgrade.refused", "SIGHUP refused: stopping, after the stop delay")
		case m.attempting:
			m.log(slog.LevelInfo, "upgrade.asked", "upgrade asked", "signal", "SIGHUP", "queued", "after the upgrade in progress")
			m.q.Enqueue()
		case m.wanted:
			m.log(slog.LevelInfo, "upgrade.asked", "upgrade asked", "signal", "SIGHUP", "joins", "the pending upgrade")
		default:
			m.log(slog.LevelInfo, "upgrade.asked", "upgrade asked", "signal", "SIGHUP")
			m.q.Join(nil) // nobody waits on a signal
			m.want()
		}
	case evUpgradeCall:
		switch {
		case m.state == stHandedOver:
			m.do(actReply{[]chan error{e.w}, ErrHandedOver})
		case m.state == stStopping || m.state == stDelaying:
			m.do(actReply{[]chan error{e.w}, ErrStopped})
		case m.state == stStarting && e.w != nil:
			m.do(actReply{[]chan error{e.w}, ErrNotReady})
		case m.attempting:
			if m.q.Enqueue(e.w) {
				m.log(slog.LevelInfo, "upgrade.asked", "upgrade asked", "by", by(e.w), "queued", "after the upgrade in progress")
			}
		default:
			if !m.wanted {
				m.log(slog.LevelInfo, "upgrade.asked", "upgrade asked", "by", by(e.w))
				m.want()
			}
			m.q.Join(e.w)
		}
	case evStopSignal:
		step := m.stops.Signal(m.state != stStopping && m.state != stHandedOver)
		// A Stop call counts as the first stop signal.
		again := step == lifecycle.StopAgain || (step == lifecycle.StopBegin && m.state == stStopping)
		switch {
		case step == lifecycle.StopSkipDelay:
			m.log(slog.LevelInfo, "stop.delay_skipped", "stop signal again: skipping the rest of the stop delay", "signal", e.sig)
			m.stop()
		case step == lifecycle.StopNow:
			m.log(slog.LevelWarn, "stop.exit_now", "third stop signal: exiting now", "signal", e.sig)
			m.do(actExitNow{})
		case again && e.drained:
			m.log(slog.LevelInfo, "stop.again", "stop signal again; the drain is over already", "signal", e.sig)
		case again:
			m.log(slog.LevelWarn, "stop.cut", "stop signal again: cutting the drain short", "signal", e.sig)
			m.do(actCutDrain{})
		case m.state == stHandedOver:
			m.log(slog.LevelInfo, "stop.asked", "stop asked; already draining after the handover", "signal", e.sig)
		case step == lifecycle.StopDelay:
			m.log(slog.LevelInfo, "stop.delayed", "stop asked; serving on for the stop delay, then draining", "signal", e.sig, "stop_delay", m.stops.Delay.String())
			m.state = stDelaying
			m.do(actStopAsked{m.stops.Delay}, actReply{m.q.Finish(), ErrStopped})
			m.wanted = false
		default:
			m.log(slog.LevelInfo, "stop.asked", "stop asked", "signal", e.sig)
			m.stop()
		}
	case evDelayOver:
		if m.stops.DelayOver() {
			m.log(slog.LevelInfo, "stop.delay_over", "stop delay over; draining")
			m.stop()
		}
	case evStopCall:
		if m.state != stStopping && m.state != stHandedOver {
			m.log(slog.LevelInfo, "stop.asked", "stop asked", "by", "Stop")
			m.stop()
		}
	case evParentGone:
		m.parentAlive = false
		if m.killPending {
			m.killPending = false
			m.do(actDisarmKill{})
		}
		if m.wanted {
			m.log(slog.LevelInfo, "upgrade.previous_exited", "previous generation exited; upgrading", "prev_pid", m.parentPid)
		}
	case evParentStatus:
		first := m.parent == nil
		st := e.st
		m.parent = &st
		if first && m.wanted && m.parentAlive {
			m.logWaiting() // again, now with the drain report
		}
	case evKillDue:
		m.killPending = false
		if m.parentAlive {
			m.log(slog.LevelWarn, "upgrade.previous_killed", "previous generation still running past its drain deadline; killing it", "prev_pid", m.parentPid)
			m.do(actKillParent{})
		}
	case evAttemptDone:
		m.attemptDone(e.res)
	}
	m.advance()
	return m.out
}

// do queues actions.
func (m *machine) do(acts ...action) { m.out = append(m.out, acts...) }

// log queues a log line.
// log logs msg with event, the record's stable key, which log shippers and
// tests match whatever the wording.
func (m *machine) log(level slog.Level, event, msg string, args ...any) {
	m.do(actLog{level, event, msg, args})
}

// stop enters Stopping: upgrades asked and not started fail with ErrStopped;
// one running is ended when it reports.
func (m *machine) stop() {
	m.state = stStopping
	m.do(actBeginStop{}, actReply{m.q.Finish(), ErrStopped})
	m.wanted = false
}

func (m *machine) attemptDone(res attemptResult) {
	m.attempting = false
	if m.state == stStopping || m.state == stDelaying {
		if res.err == nil {
			// The new generation became ready just as the stop began: it
			// must not outlive this one.
			m.log(slog.LevelWarn, "stop.new_generation", "stopping: stopping the new generation that just became ready too", "child_pid", res.pid)
			m.do(actStopChild{res})
		}
		m.do(actReply{m.q.Drop(), ErrStopped})
		return
	}
	m.do(actReply{m.q.Finish(), res.err})
	m.wanted = false
	switch {
	case !m.q.Queued():
	case res.err != nil:
		m.log(slog.LevelInfo, "upgrade.dequeued", "starting the upgrade queued during the failed one")
		m.q.Promote()
		m.want()
	default:
		// The new generation carries out the queued upgrade; this one has
		// handed over, as its callers are told.
		m.log(slog.LevelInfo, "upgrade.passed_on", "the new generation carries out the upgrade queued during this one", "child_pid", res.pid)
		m.do(actPassOnUpgrade{res}, actReply{m.q.Drop(), nil})
	}
	if res.err == nil {
		m.state = stHandedOver
		m.do(actHandOver{res})
	} else {
		m.state = stReady
	}
}

// want marks an upgrade wanted, and says so if it must wait for the previous
// generation, which is still draining.
func (m *machine) want() {
	m.wanted = true
	if m.parentAlive {
		m.logWaiting()
	}
}

// logWaiting says that the wanted upgrade waits for the previous generation,
// with its drain report once there is one (it comes moments after Ready).
func (m *machine) logWaiting() {
	args := []any{"prev_pid", m.parentPid}
	if m.parent != nil {
		args = append(args, "prev_conns", m.parent.conns, "prev_deadline", m.parent.deadline.Format(time.RFC3339))
	}
	m.log(slog.LevelInfo, "upgrade.waiting", "upgrade waits for the previous generation to finish draining", args...)
}

// advance starts the upgrade that is wanted, once this generation is ready
// and its predecessor has exited; until then it says what it waits for.
func (m *machine) advance() {
	if !m.wanted || m.attempting || m.state != stReady {
		return
	}
	if m.parentAlive {
		if m.parent != nil && !m.killSet {
			m.killSet, m.killPending = true, true
			m.do(actArmKill{m.parent.deadline.Add(parentKillGrace)})
		}
		return
	}
	if m.canUpgrade != nil {
		// Ready said so once (upgrade.unavailable); a caller gets the
		// error, and a signal, with nobody to tell, gets a line.
		ws := m.q.Finish()
		if slices.Contains(ws, nil) {
			m.log(slog.LevelWarn, "upgrade.refused", "upgrade refused; still serving", "err", m.canUpgrade)
		}
		m.do(actReply{ws, m.canUpgrade})
		m.wanted = false
		return
	}
	m.attempting, m.state = true, stUpgrading
	m.do(actStartAttempt{})
}

// event is one of the ev* types: a sealed interface, whose every type step
// handles (TestSwitchesAreExhaustive).
type event interface{ isEvent() }

func (evReady) isEvent()        {}
func (evHUP) isEvent()          {}
func (evUpgradeCall) isEvent()  {}
func (evStopSignal) isEvent()   {}
func (evStopCall) isEvent()     {}
func (evParentGone) isEvent()   {}
func (evParentStatus) isEvent() {}
func (evKillDue) isEvent()      {}
func (evDelayOver) isEvent()    {}
func (evAttemptDone) isEvent()  {}

// action is one of the act* types: a sealed interface, whose every type the
// run goroutine carries out (TestSwitchesAreExhaustive).
type action interface{ isAction() }

func (actLog) isAction()           {}
func (actReply) isAction()         {}
func (actStartAttempt) isAction()  {}
func (actBeginStop) isAction()     {}
func (actHandOver) isAction()      {}
func (actPassOnUpgrade) isAction() {}
func (actStopChild) isAction()     {}
func (actCutDrain) isAction()      {}
func (actExitNow) isAction()       {}
func (actKillParent) isAction()    {}
func (actArmKill) isAction()       {}
func (actDisarmKill) isAction()    {}
func (actStopAsked) isAction()     {}
