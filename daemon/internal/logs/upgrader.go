//go:build linux

package logs

import "log/slog"

// Upgrader returns the logger for handoff's own upgrader: log's, with the
// keys the library adds to every record (upgrader.Options.Logger: gen and
// pid, with Logger.With) put in handoff's terms, so that each fact has one
// key across handoff's lines and the library's, and event is event in both.
// The library's gen, handoff's own generation (one more for each upgrade of
// handoff itself), becomes handoff_gen, since gen is the program's
// generation in handoff's lines; its pid is dropped, since log carries it
// as handoff_pid. A stop asked of handoff's upgrader then logs
//
//	handoff_pid=27831 handoff_gen=1 event=stop.asked
func Upgrader(log *slog.Logger) *slog.Logger {
	return slog.New(libKeys{log.Handler()})
}

// libKeys is Upgrader's handler.
type libKeys struct{ slog.Handler }

// WithAttrs renames gen and drops pid among the attributes added at the top
// level.
func (h libKeys) WithAttrs(attrs []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		switch a.Key {
		case "pid":
			continue
		case "gen":
			a.Key = "handoff_gen"
		}
		kept = append(kept, a)
	}
	return libKeys{h.Handler.WithAttrs(kept)}
}

// WithGroup returns the plain handler: keys inside a group are left alone.
func (h libKeys) WithGroup(name string) slog.Handler { return h.Handler.WithGroup(name) }
