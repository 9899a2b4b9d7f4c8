//go:build linux

package logs

import (
	"io"
	"log/slog"
)

// Handler returns the handler for --log-format: "json" for one JSON object
// per line, anything else for slog's key=value text.
func Handler(format string, w io.Writer) slog.Handler {
	if format == "json" {
		return slog.NewJSONHandler(w, nil)
	}
	return slog.NewTextHandler(w, nil)
}
