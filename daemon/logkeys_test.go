//go:build linux

package daemon_test

import (
	"strconv"
	"testing"

	"github.com/handoff-dev/handoff/internal/logrec"
)

// TestLogRecordKeys: handoff's own lines and those of its upgrader (the
// library's) name each fact with one key — event is "event" in both,
// handoff's pid is handoff_pid alone, and the library's generation, which is
// handoff's own, is handoff_gen (gen is the program's).
func TestLogRecordKeys(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil)
	d.stop()
	pid := strconv.Itoa(d.cmd.Process.Pid)
	recs := d.records()
	for _, event := range []string{"listening", "exit"} { // the library's
		r := logrec.Find(recs, "event="+event)
		if r == nil {
			t.Errorf("no record with event=%s from handoff's upgrader:\n%s", event, d.log())
			continue
		}
		if r.Get("handoff_pid") != pid || r.Get("handoff_gen") != "1" {
			t.Errorf("event=%s: handoff_pid %q handoff_gen %q, want %s and 1: %s", event, r.Get("handoff_pid"), r.Get("handoff_gen"), pid, r)
		}
	}
	for _, r := range recs {
		if _, ok := r["handoff"]; ok {
			t.Errorf("a record with a handoff group: %s", r)
		}
		if r.Get("pid") == pid {
			t.Errorf("a record with handoff's pid under pid too: %s", r)
		}
		if r.Get("event") == "" {
			t.Errorf("a record without event: %s", r)
		}
	}
	if logrec.Find(recs, "event=generation.ready", "gen=1") == nil {
		t.Errorf("no generation.ready with the program's gen=1:\n%s", d.log())
	}
}
