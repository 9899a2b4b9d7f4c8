package machine

import (
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
)

// onMemTick: time to measure the workers' memory (--max-memory).
func (m *Machine) onMemTick() {
	m.measuring = false
	if !m.stopping() && m.maxMemory > 0 {
		m.do(gen.ActMeasure{})
	}
}

// armMemory starts the checks of --max-memory.
func (m *Machine) armMemory() {
	if m.maxMemory > 0 && !m.measuring {
		m.measuring = true
		m.do(gen.ActAfter{D: memEvery, Ev: gen.EvMemTick{}})
	}
}

// memEvery is how often the workers' resident memory is checked against
// --max-memory.
const memEvery = time.Second

// onMemory replaces, alone, a worker whose resident memory passed
// --max-memory: a new one starts with what it runs, and it drains once that
// one is ready. One at a time, and not while a reload rolls.
func (m *Machine) onMemory(rss map[*gen.Gen]int64) {
	defer m.armMemory()
	if m.roll != nil || m.stopping() || m.stops.Delaying() {
		return
	}
	for w := range m.slots {
		sl := &m.slots[w]
		g := sl.cur
		if g == nil || sl.next != nil || rss[g] <= m.maxMemory {
			continue
		}
		if g.ForMemory && m.now().Sub(g.ReadyAt) < stableAfter {
			// Replaced for its memory, and over it again at once: the
			// program needs more than --max-memory. Replacing it again
			// would loop.
			if !sl.memWarned {
				sl.memWarned = true
				m.log(slog.LevelError, "worker.memory_too_low", "a worker replaced for its memory passed --max-memory again at once; it is left serving — raise --max-memory above what the program needs",
					append(m.about(g), "rss_bytes", rss[g], "max_bytes", m.maxMemory)...)
			}
			continue
		}
		sl.memWarned = false
		m.log(slog.LevelWarn, "worker.over_memory", "worker passed --max-memory; replacing it, a new one ready first",
			append(m.about(g), "rss_bytes", rss[g], "max_bytes", m.maxMemory)...)
		r := &roll{kind: spawnReplace, target: g, n: m.nextN, spec: g.Spec, todo: []int{w}, surge: 1, olds: map[int]*gen.Spec{}, draining: map[*gen.Gen]bool{}}
		m.nextN++
		m.roll = r
		m.advanceRoll()
		return
	}
}

// onUnresponsive replaces a serving process shown hung (probe.WatchLive): it is
// paused at once, so that it takes no more connections — those it holds
// are lost to it — and a new process with what it ran takes its index; it
// drains once that one is ready, with no bake. One replacement at a time,
// and none while a reload rolls: the checks report it again meanwhile.
// A process that replaced one for the same and hangs within stableAfter of
// its start is said to once, and replaced only once it has served
// stableAfter: replacing it faster would not help a program that hangs on
// something outside it.
func (m *Machine) onUnresponsive(e gen.EvUnresponsive) {
	g := e.G
	if g.W >= len(m.slots) {
		return
	}
	sl := &m.slots[g.W]
	if g.State != gen.Serving || sl.cur != g || sl.next != nil || g.Unresponsive || m.roll != nil || m.stopping() || m.stops.Delaying() {
		return
	}
	if g.ForHung && m.now().Sub(g.ReadyAt) < stableAfter {
		if !sl.hungWarned {
			sl.hungWarned = true
			m.log(slog.LevelError, "worker.unresponsive_again", "a process that replaced a hung one hangs too; it is replaced again once it has served 10s — look at what the program waits on",
				append(m.about(g), append([]any{"reason", e.Reason}, e.Args...)...)...)
		}
		return
	}
	sl.hungWarned = false
	g.Unresponsive = true
	sl.unresponsive++
	m.counts.unresponsive++
	m.log(slog.LevelError, "worker.unresponsive", "process shown hung; pausing it and replacing it, a new one ready first",
		append(m.about(g), append([]any{"reason", e.Reason}, e.Args...)...)...)
	m.do(gen.ActPause{G: g, Pause: true})
	r := &roll{kind: spawnReplace, target: g, hung: true, n: m.nextN, spec: g.Spec, todo: []int{g.W}, surge: 1, olds: map[int]*gen.Spec{}, draining: map[*gen.Gen]bool{}}
	m.nextN++
	m.roll = r
	m.advanceRoll()
}
