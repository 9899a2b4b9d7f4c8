package upgrader

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/sealed"
)

// kinds names the actions, with the message of a log and the error of a
// reply, so that a test can compare them as a list.
func kinds(acts []action) []string {
	var out []string
	for _, a := range acts {
		switch a := a.(type) {
		case actLog:
			out = append(out, "log:"+a.event)
		case actReply:
			n := 0
			for _, w := range a.ws {
				if w != nil {
					n++
				}
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("reply%d:%v", n, a.err))
			}
		default:
			out = append(out, strings.TrimPrefix(reflect.TypeOf(a).Name(), "act"))
		}
	}
	return out
}

// TestMachine drives the generation's state machine through the transitions
// of the package documentation's table, one sequence of events per case.
func TestMachine(t *testing.T) {
	w := make(chan error, 4) // an Upgrade caller
	ok := attemptResult{pid: 42}
	failed := attemptResult{err: &UpgradeError{Kind: ErrExited}}
	deadline := time.Now().Add(10 * time.Second)
	type step struct {
		ev    event
		state genState
		acts  []string
	}
	cases := []struct {
		name      string
		parentPid int
		refuse    error
		delay     time.Duration
		steps     []step
	}{
		{"SIGHUP while starting waits for Ready, then upgrades, then hands over", 0, nil, 0, []step{
			{evHUP{}, stStarting, []string{"log:upgrade.asked"}},
			{evReady{}, stUpgrading, []string{"StartAttempt"}},
			{evAttemptDone{ok}, stHandedOver, []string{"HandOver"}},
			{evHUP{}, stHandedOver, []string{"log:upgrade.ignored"}},
			{evUpgradeCall{w}, stHandedOver, []string{"reply1:" + ErrHandedOver.Error()}},
		}},
		{"Upgrade before Ready fails with ErrNotReady", 0, nil, 0, []step{
			{evUpgradeCall{w}, stStarting, []string{"reply1:" + ErrNotReady.Error()}},
		}},
		{"a failed upgrade leaves the generation ready and answers its caller", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evUpgradeCall{w}, stUpgrading, []string{"log:upgrade.asked", "StartAttempt"}},
			{evAttemptDone{failed}, stReady, []string{"reply1:" + failed.err.Error()}},
		}},
		{"SIGHUPs during an attempt queue one more; after a failure this one runs it", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evHUP{}, stUpgrading, []string{"log:upgrade.asked", "StartAttempt"}},
			{evHUP{}, stUpgrading, []string{"log:upgrade.asked"}},
			{evUpgradeCall{w}, stUpgrading, nil},
			{evAttemptDone{failed}, stUpgrading, []string{"log:upgrade.dequeued", "StartAttempt"}},
			{evAttemptDone{ok}, stHandedOver, []string{"reply1:<nil>", "HandOver"}},
		}},
		{"an upgrade queued during a successful attempt is passed on", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evHUP{}, stUpgrading, []string{"log:upgrade.asked", "StartAttempt"}},
			{evUpgradeCall{w}, stUpgrading, []string{"log:upgrade.asked"}},
			{evAttemptDone{ok}, stHandedOver, []string{"log:upgrade.passed_on", "PassOnUpgrade", "reply1:<nil>", "HandOver"}},
		}},
		{"an upgrade waits for the draining predecessor, which is killed past its deadline", 7, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evHUP{}, stReady, []string{"log:upgrade.asked", "log:upgrade.waiting"}},
			{evParentStatus{drainStatus{conns: 3, deadline: deadline}}, stReady, []string{"log:upgrade.waiting", "ArmKill"}},
			{evParentStatus{drainStatus{conns: 2, deadline: deadline}}, stReady, nil},
			{evKillDue{}, stReady, []string{"log:upgrade.previous_killed", "KillParent"}},
			{evParentGone{}, stUpgrading, []string{"log:upgrade.previous_exited", "StartAttempt"}},
		}},
		{"a drain report before the upgrade is asked goes in the one wait line", 7, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evParentStatus{drainStatus{conns: 3, deadline: deadline}}, stReady, nil},
			{evHUP{}, stReady, []string{"log:upgrade.asked", "log:upgrade.waiting", "ArmKill"}},
			{evHUP{}, stReady, []string{"log:upgrade.asked"}},
			{evParentGone{}, stUpgrading, []string{"DisarmKill", "log:upgrade.previous_exited", "StartAttempt"}},
		}},
		{"stop signals: stop, cut the drain, exit", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.asked", "BeginStop"}},
			{evHUP{}, stStopping, []string{"log:upgrade.ignored"}},
			{evUpgradeCall{w}, stStopping, []string{"reply1:" + ErrStopped.Error()}},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.cut", "CutDrain"}},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.exit_now", "ExitNow"}},
		}},
		{"a second stop signal after the drain ended only says so", 0, nil, 0, []step{
			{evStopCall{}, stStopping, []string{"log:stop.asked", "BeginStop"}},
			{evStopSignal{sig: "interrupt", drained: true}, stStopping, []string{"log:stop.again"}},
		}},
		{"a stop during an attempt stops the child that became ready meanwhile", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evUpgradeCall{w}, stUpgrading, []string{"log:upgrade.asked", "StartAttempt"}},
			{evHUP{}, stUpgrading, []string{"log:upgrade.asked"}},
			{evStopCall{}, stStopping, []string{"log:stop.asked", "BeginStop", "reply1:" + ErrStopped.Error()}},
			{evAttemptDone{ok}, stStopping, []string{"log:stop.new_generation", "StopChild"}},
		}},
		{"after a handover, a stop signal drains on; a second cuts", 0, nil, 0, []step{
			{evReady{}, stReady, nil},
			{evHUP{}, stUpgrading, []string{"log:upgrade.asked", "StartAttempt"}},
			{evAttemptDone{ok}, stHandedOver, []string{"HandOver"}},
			{evStopSignal{sig: "terminated"}, stHandedOver, []string{"log:stop.asked"}},
			{evStopSignal{sig: "terminated"}, stHandedOver, []string{"log:stop.cut", "CutDrain"}},
			{evStopCall{}, stHandedOver, nil},
		}},
		{"stop delay: serve on, refuse upgrades, then drain", 0, nil, 2 * time.Second, []step{
			{evReady{}, stReady, nil},
			{evStopSignal{sig: "terminated"}, stDelaying, []string{"log:stop.delayed", "StopAsked"}},
			{evHUP{}, stDelaying, []string{"log:upgrade.refused"}},
			{evUpgradeCall{w}, stDelaying, []string{"reply1:" + ErrStopped.Error()}},
			{evDelayOver{}, stStopping, []string{"log:stop.delay_over", "BeginStop"}},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.cut", "CutDrain"}},
		}},
		{"stop delay: a second signal skips it, a third cuts the drain", 0, nil, 2 * time.Second, []step{
			{evReady{}, stReady, nil},
			{evStopSignal{sig: "terminated"}, stDelaying, []string{"log:stop.delayed", "StopAsked"}},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.delay_skipped", "BeginStop"}},
			{evDelayOver{}, stStopping, nil},
			{evStopSignal{sig: "terminated"}, stStopping, []string{"log:stop.cut", "CutDrain"}},
		}},
		{"where upgrades cannot work, Ready says so once; a signal's refusal is logged, a caller's returned", 0, errNoHandoff, 0, []step{
			{evReady{}, stReady, []string{"log:upgrade.unavailable"}},
			{evHUP{}, stReady, []string{"log:upgrade.asked", "log:upgrade.refused"}},
			{evUpgradeCall{w}, stReady, []string{"log:upgrade.asked", "reply1:" + errNoHandoff.Error()}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMachine(c.parentPid, c.refuse, c.delay)
			for i, s := range c.steps {
				got := kinds(m.step(s.ev))
				if !reflect.DeepEqual(got, s.acts) && !(len(got) == 0 && len(s.acts) == 0) {
					t.Errorf("step %d %T: actions %q, want %q", i, s.ev, got, s.acts)
				}
				if m.state != s.state {
					t.Errorf("step %d %T: state %v, want %v", i, s.ev, m.state, s.state)
				}
			}
		})
	}
	// A nil waiter (an upgrade passed on by the parent) is never answered.
	m := newMachine(0, nil, 0)
	m.step(evReady{})
	if acts := kinds(m.step(evUpgradeCall{nil})); !reflect.DeepEqual(acts, []string{"log:upgrade.asked", "StartAttempt"}) {
		t.Errorf("passed-on upgrade: %q", acts)
	}
	if !errors.Is(errNoHandoff, errors.ErrUnsupported) {
		t.Error("errNoHandoff does not wrap errors.ErrUnsupported")
	}
}

// TestSwitchesAreExhaustive: step handles every event, and the run
// goroutine every action.
func TestSwitchesAreExhaustive(t *testing.T) {
	sealed.Check(t, ".", sealed.Switch{Marker: "isEvent", Fn: "step"}, sealed.Switch{Marker: "isAction", Fn: "run"})
}
