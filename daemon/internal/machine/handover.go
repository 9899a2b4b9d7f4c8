package machine

import "log/slog"

// handoverCounts returns the counts of relayed connections by outcome,
// all 0, with --handover (on); nil without.
func handoverCounts(on bool) map[string]int {
	if !on {
		return nil
	}
	return map[string]int{"handed_over": 0, "refused": 0, "fallback": 0}
}

// onRelayed counts and logs the end of a relay of connections.
func (m *Machine) onRelayed(e EvRelayed) {
	fallback := max(e.Offered-e.Committed-e.Refused, 0)
	if m.counts.handover == nil {
		m.counts.handover = map[string]int{}
	}
	m.counts.handover["handed_over"] += e.Committed
	m.counts.handover["refused"] += e.Refused
	m.counts.handover["fallback"] += fallback
	args := append(m.about(e.Old), "to_gen", e.New.N, "to_pid", e.New.PID,
		"handed_over", e.Committed, "refused", e.Refused, "fallback", fallback)
	level := slog.LevelInfo
	if e.Err != "" {
		args = append(args, "err", e.Err)
	}
	if e.Refused > 0 || fallback > 0 {
		level = slog.LevelWarn
	}
	m.log(level, "handover.relayed", "connections relayed to the new process; those refused or aborted drain in the old one", args...)
}
