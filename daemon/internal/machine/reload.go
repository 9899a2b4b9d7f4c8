package machine

import (
	"fmt"
	"log/slog"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/lifecycle"
)

// onExtendTick: while a reload runs, systemd is asked for more time
// (EXTEND_TIMEOUT_USEC) every lifecycle.ExtendEvery.
func (m *Machine) onExtendTick() {
	m.extending = m.reloading
	if m.reloading {
		m.do(gen.ActNotify{Kind: "extend", Status: ""}, gen.ActAfter{D: lifecycle.ExtendEvery, Ev: gen.EvExtendTick{}})
	}
}

// askReload starts a reload, or queues one if a generation is already on its
// way. w, if not nil, receives the result.
func (m *Machine) askReload(w chan<- gen.ReloadResult) {
	if m.stopping() || m.stops.Delaying() {
		if m.stops.Delaying() {
			m.log(slog.LevelInfo, "reload.refused", "reload refused: stopping, after the stop delay")
		}
		if w != nil {
			m.do(gen.ActReply{WS: []chan<- gen.ReloadResult{w}, R: gen.ReloadResult{Error: "handoff is stopping"}})
		}
		return
	}
	if g := m.starting(); g != nil || m.roll != nil {
		if m.q.Enqueue(waiting(w)...) {
			n := m.nextN - 1
			if m.roll != nil {
				n = m.roll.n
			} else if g != nil {
				n = g.N
			}
			m.log(slog.LevelInfo, "reload.queued", "reload queued: a new generation is already starting", "gen", n)
		}
		return
	}
	m.q.Join(waiting(w)...)
	m.startReload()
}

// starting returns a process starting or baking to take a worker's place,
// or nil.
func (m *Machine) starting() *gen.Gen {
	for _, sl := range m.slots {
		if sl.next != nil {
			return sl.next
		}
	}
	return nil
}

func (m *Machine) startReload() {
	m.reloading = true
	m.reloadStart = m.now()
	m.do(gen.ActNotify{Kind: "reloading", Status: fmt.Sprintf("reloading: starting generation %d", m.nextN)}, gen.ActNotify{Kind: "extend", Status: ""})
	if !m.extending {
		// One chain of ticks, however many reloads follow one another.
		m.extending = true
		m.do(gen.ActAfter{D: lifecycle.ExtendEvery, Ev: gen.EvExtendTick{}})
	}
	r := m.newRoll(spawnReload)
	if m.rollingBack {
		r.spec = m.previous
	}
	m.advanceRoll()
}

func (m *Machine) finishReload(r gen.ReloadResult) {
	m.do(gen.ActReply{WS: m.q.Finish(), R: r})
	m.reloading, m.rollingBack = false, false
}

// waiting returns w as a list of those who wait, none if w is nil.
func waiting(w chan<- gen.ReloadResult) []chan<- gen.ReloadResult {
	if w == nil {
		return nil
	}
	return []chan<- gen.ReloadResult{w}
}

// rollback stops a reload whose new workers bake, putting back the workers
// it replaced; otherwise it starts a generation from what the previous
// current generation ran, as a reload does.
func (m *Machine) rollback(w chan<- gen.ReloadResult) {
	m.log(slog.LevelInfo, "rollback.asked", "rollback asked", "by", "handoff rollback")
	reply := func(r gen.ReloadResult) { m.do(gen.ActReply{WS: []chan<- gen.ReloadResult{w}, R: r}) }
	var bakingG *gen.Gen
	for _, sl := range m.slots {
		if sl.next != nil && sl.next.State == gen.Baking && sl.cur != nil {
			bakingG = sl.next
		}
	}
	r := m.roll
	switch {
	case m.stopping() || m.stops.Delaying():
		reply(gen.ReloadResult{Error: "handoff is stopping"})
	case bakingG != nil && r != nil && r.kind == spawnReload && !r.back:
		g := bakingG
		m.log(slog.LevelWarn, "rollback.stopping", "rollback: stopping the generation that bakes; the old one serves on", append(m.about(g), "serving", m.slots[g.W].cur.N)...)
		g.FailWhy = "was rolled back during its bake window"
		m.drain(g)
		m.slots[g.W].next = nil
		r.rollbackWs = append(r.rollbackWs, w)
		why := fmt.Sprintf("%s was rolled back during its bake window", m.name(g))
		m.failRoll(g, "rolled_back", why, fmt.Sprintf("rolled back: serving generation %d (pid %d)", m.slots[g.W].cur.N, m.slots[g.W].cur.PID))
	case m.starting() != nil || r != nil:
		n := m.nextN - 1
		if r != nil {
			n = r.n
		}
		reply(gen.ReloadResult{Error: fmt.Sprintf("generation %d is starting; roll back once it is ready (or failed)", n)})
	case m.previous == nil:
		reply(gen.ReloadResult{Error: "nothing to roll back to: no generation served before the current one"})
	default:
		m.q.Join(waiting(w)...)
		m.rollingBack = true
		m.log(slog.LevelInfo, "rollback.started", "rolling back", "program", m.previous.Program, "dir", m.previous.Dir)
		m.startReload()
	}
}
