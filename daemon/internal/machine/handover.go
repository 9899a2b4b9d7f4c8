package machine

import (
	"log/slog"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// handoverCounts returns the counts of relayed connections by outcome,
// all 0, with --handover (on); nil without.
func handoverCounts(on bool) map[string]int {
	if !on {
		return nil
	}
	return map[string]int{"handed_over": 0, "refused": 0, "fallback": 0}
}

// onRelayed counts the connections a relay settled, and logs its totals
// once it has ended.
func (m *Machine) onRelayed(e gen.EvRelayed) {
	if m.counts.handover == nil {
		m.counts.handover = handoverCounts(true)
	}
	m.counts.handover["handed_over"] += e.Committed
	m.counts.handover["refused"] += e.Refused
	m.counts.handover["fallback"] += e.Fallback
	if m.relays == nil {
		m.relays = map[*gen.Gen]*[3]int{}
	}
	t := m.relays[e.Old]
	if t == nil {
		t = &[3]int{}
		m.relays[e.Old] = t
	}
	t[0] += e.Committed
	t[1] += e.Refused
	t[2] += e.Fallback
	if !e.Done {
		return
	}
	delete(m.relays, e.Old)
	args := append(m.about(e.Old), "to_gen", e.New.N, "to_pid", e.New.PID,
		"handed_over", t[0], "refused", t[1], "fallback", t[2])
	if t[0] > 0 {
		args = append(args, "took_ms", e.Took.Milliseconds())
		if m.counts.handoverSec == nil {
			m.counts.handoverSec = promtext.NewHistogram(handoverBuckets...)
		}
		m.counts.handoverSec.Observe(e.Took.Seconds())
	}
	if e.Err != "" {
		args = append(args, "err", e.Err)
	}
	level := slog.LevelInfo
	if t[1] > 0 || t[2] > 0 {
		level = slog.LevelWarn
	}
	m.log(level, "handover.relayed", "connections relayed to the new process; those refused or aborted stay with the old one, which drains them unless it died", args...)
}
