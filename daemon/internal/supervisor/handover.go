//go:build linux

package supervisor

import (
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/relay"
)

// handOver carries out ActHandOver: if the new process said hello and the
// old one has its out channel, the hello goes to the old one ("your
// successor adopts", before its stop signal) and a relay starts between
// them; otherwise the channels that would have carried connections close,
// so that the new process's Adopted ends and the old one's Offers fail at
// once (its connections drain).
func (s *supervisor) handOver(a gen.ActHandOver) {
	nw := s.procs[a.New]
	var old *generation
	if a.Old != nil {
		old = s.procs[a.Old]
	}
	if nw == nil || nw.Handover == nil {
		if old != nil && old.Handover != nil && old.Handover.Out != nil {
			old.Handover.Out.Close()
			old.Handover.Out = nil
		}
		return
	}
	hello := nw.Handover.TakeHello()
	if hello == nil || old == nil || old.Handover == nil || old.Handover.Out == nil {
		if nw.Handover.In != nil {
			nw.Handover.In.Close()
			nw.Handover.In = nil
		}
		if old != nil && old.Handover != nil && old.Handover.Out != nil {
			old.Handover.Out.Close()
			old.Handover.Out = nil
		}
		if hello == nil && old != nil {
			s.log.Info("the new process adopts no connection: the old one drains them", "event", "handover.unavailable",
				"gen", a.Old.N, "gen_pid", a.Old.PID, "to_gen", a.New.N, "to_pid", a.New.PID)
		}
		return
	}
	from, to := old.Handover.Out, nw.Handover.In
	old.Handover.Out, nw.Handover.In = nil, nil
	_ = from.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := from.Write(hello); err != nil {
		from.Close()
		to.Close()
		s.log.Warn("cannot tell the old process that its successor adopts: it drains its connections", "event", "handover.failed",
			"gen", a.Old.N, "gen_pid", a.Old.PID, "err", err)
		return
	}
	_ = from.SetWriteDeadline(time.Time{})
	s.log.Info("relaying connections to the new process", "event", "handover.relaying",
		"gen", a.Old.N, "gen_pid", a.Old.PID, "to_gen", a.New.N, "to_pid", a.New.PID)
	s.relayedAt.Store(time.Now().UnixNano())
	relay.Start(from, to, func(ev gen.EvRelayed) {
		ev.Old, ev.New = a.Old, a.New
		if ev.Committed > 0 {
			s.relayedAt.Store(time.Now().UnixNano())
		}
		s.events <- ev
	})
}

// relayBusy is how long after a relay started, or last passed a commit on,
// connections count as moving: a relay lives on, idle, until the old
// process exits, but what costs is the moving.
const relayBusy = 500 * time.Millisecond

// relaying reports whether connections are moving between generations
// now (see relayBusy).
func (s *supervisor) relaying() bool {
	return time.Since(time.Unix(0, s.relayedAt.Load())) < relayBusy
}
