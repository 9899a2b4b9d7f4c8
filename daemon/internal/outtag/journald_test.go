//go:build linux

package outtag_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
)

const journald = "/usr/lib/systemd/systemd-journald"

// journaldScript runs in mount and PID namespaces of its own: a tmpfs on
// /run, journald's configuration ($1) over the host's, journald, then this
// test binary ($2) as the sender (TestJournaldSender), and journalctl once
// the 4 entries are in.
const journaldScript = `set -e
mount -t tmpfs tmpfs /run
mount --bind "$1" /etc/systemd/journald.conf
mkdir -p /run/systemd/journal /run/log/journal
` + journald + ` &
i=0
until [ -S /run/systemd/journal/socket ]; do
	i=$((i+1)); [ $i -le 200 ] || { echo "no journald socket after 10 s" >&2; exit 1; }; sleep 0.05
done
HANDOFF_OUTTAG_SENDER=1 "$2" -test.run '^TestJournaldSender$' -test.count=1 >&2
i=0
until [ "$(journalctl -D /run/log/journal -q -o json HANDOFF_GENERATION=3 | wc -l)" -ge 4 ]; do
	i=$((i+1)); [ $i -le 200 ] || { echo "fewer than 4 entries after 10 s" >&2; break; }; sleep 0.05
done
journalctl -D /run/log/journal -q -o json --all HANDOFF_GENERATION=3
`

// TestJournald: a real systemd-journald takes the entries as sent — the
// priority prefix, a binary-safe field, a line of 250 KiB over a memfd, a
// line's end at EOF. It runs journald in namespaces of its own (root,
// unshare), its storage volatile, reading no kernel log.
func TestJournald(t *testing.T) {
	if testing.Short() {
		t.Skip("runs journald: not under -short")
	}
	if os.Getuid() != 0 {
		t.Skip("runs journald in namespaces of its own: root only")
	}
	if _, err := os.Stat(journald); err != nil {
		t.Skip("no journald here:", err)
	}
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("no journalctl here:", err)
	}
	conf := filepath.Join(t.TempDir(), "journald.conf")
	if err := os.WriteFile(conf, []byte("[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", journaldScript, "sh", conf, self)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("journalctl: %v: %.200q", err, l)
		}
		got = append(got, e)
	}
	want := []struct{ msg, prio, brk string }{
		{"hello journal", "6", ""},
		{"an error", "3", ""},
		{strings.Repeat("h", 250<<10), "6", ""},
		{"end", "6", "eof"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %.2000s\n%s", len(got), len(want), out, stderr.String())
	}
	for i, w := range want {
		e := got[i]
		if e["MESSAGE"] != w.msg || e["PRIORITY"] != w.prio || (w.brk != "" && e["HANDOFF_LINE_BREAK"] != w.brk) {
			t.Errorf("entry %d: MESSAGE %.40q PRIORITY %v HANDOFF_LINE_BREAK %v; want %.40q, %s, %q", i, e["MESSAGE"], e["PRIORITY"], e["HANDOFF_LINE_BREAK"], w.msg, w.prio, w.brk)
		}
		if e["SYSLOG_IDENTIFIER"] != "my\napp" || e["SYSLOG_PID"] != "4242" || e["HANDOFF_WORKER"] != "1" || e["HANDOFF_PID"] != "4242" || e["HANDOFF_STREAM"] != "stderr" {
			t.Errorf("entry %d: SYSLOG_IDENTIFIER %q SYSLOG_PID %v HANDOFF_WORKER %v HANDOFF_PID %v HANDOFF_STREAM %v", i, e["SYSLOG_IDENTIFIER"], e["SYSLOG_PID"], e["HANDOFF_WORKER"], e["HANDOFF_PID"], e["HANDOFF_STREAM"])
		}
	}
}

// TestJournaldSender is TestJournald's sender, run by it in journald's
// namespaces; it does nothing otherwise.
func TestJournaldSender(t *testing.T) {
	if os.Getenv("HANDOFF_OUTTAG_SENDER") != "1" {
		t.Skip("TestJournald's sender, run by it")
	}
	j, err := outtag.OpenJournal(outtag.JournalSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Stream: "stderr", Journal: j})
	s := k.Source(outtag.Tags{Gen: 3, Worker: 1, PID: 4242, Ident: "my\napp"})
	write(t, s, "hello journal\n<3>an error\n"+strings.Repeat("h", 250<<10)+"\nend")
	s.Close()
	if out.String() != "" {
		t.Errorf("journald refused entries, written to the stream: %.200q", out.String())
	}
}
