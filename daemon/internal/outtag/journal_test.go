//go:build linux

package outtag_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"golang.org/x/sys/unix"
)

// fakeJournal is a socket bound where journald's would be, that reads
// entries as journald does: datagrams, or a memfd passed alone.
type fakeJournal struct {
	path    string
	conn    *net.UnixConn
	entries chan map[string]string
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	return newFakeJournalAt(t, filepath.Join(t.TempDir(), "socket"))
}

// newFakeJournalAt is newFakeJournal with its socket at path.
func newFakeJournalAt(t *testing.T, path string) *fakeJournal {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	j := &fakeJournal{path: path, conn: c, entries: make(chan map[string]string, 100)}
	go func() {
		buf, oob := make([]byte, 1<<20), make([]byte, 256)
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				close(j.entries)
				return
			}
			data := buf[:n]
			if oobn > 0 {
				data = readPassed(t, n, oob[:oobn])
			}
			j.entries <- parseEntry(t, data)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return j
}

// readPassed reads the memfd an empty datagram carried, checking it is
// sealed as journald requires.
func readPassed(t *testing.T, n int, oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		t.Errorf("control message: %v, %d", err, len(msgs))
		return nil
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 || n != 0 {
		t.Errorf("want one fd alone: %v %v, %d bytes besides", fds, err, n)
		return nil
	}
	f := os.NewFile(uintptr(fds[0]), "passed")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_WRITE == 0 || seals&unix.F_SEAL_SHRINK == 0 {
		t.Errorf("memfd not sealed: %#x, %v", seals, err)
	}
	var b bytes.Buffer
	if _, err := f.Seek(0, 0); err != nil {
		t.Error(err)
	}
	if _, err := b.ReadFrom(f); err != nil {
		t.Error(err)
	}
	return b.Bytes()
}

// parseEntry reads an entry of the native protocol; the value of
// "_SIZE" is how it came: "dgram" or "memfd" are not told apart here.
func parseEntry(t *testing.T, b []byte) map[string]string {
	e := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i < 0 {
			t.Errorf("field without an end: %.80q", b)
			return e
		}
		name := string(b[:i])
		if b[i] == '=' {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				t.Errorf("field %s without a newline", name)
				return e
			}
			e[name] = string(b[i+1 : i+j])
			b = b[i+j+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			t.Errorf("binary field %s cut short", name)
			return e
		}
		n := binary.LittleEndian.Uint64(b)
		if uint64(len(b)) < 8+n+1 || b[8+n] != '\n' {
			t.Errorf("binary field %s: length %d, %d bytes left", name, n, len(b))
			return e
		}
		e[name] = string(b[8 : 8+n])
		e["binary:"+name] = "yes"
		b = b[8+n+1:]
	}
	return e
}

func (j *fakeJournal) next(t *testing.T) map[string]string {
	t.Helper()
	select {
	case e := <-j.entries:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no journal entry within 5 s")
		return nil
	}
}

// TestJournal: each line an entry with the tags as fields; a priority
// prefix read; a value with a newline in the binary-safe form; a line
// longer than a datagram sent over a memfd; a line in pipe-sized pieces
// one entry; the last line, without its newline, at the end.
func TestJournal(t *testing.T) {
	fj := newFakeJournal(t)
	j, err := outtag.OpenJournal(fj.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Stream: "stderr", Journal: j, Idle: time.Hour}) // no piece passed on early, however slow the test
	a := k.Source(outtag.Tags{Gen: 5, Worker: 1, PID: 777, Ident: "my\napp"})
	mid := strings.Repeat("m", 100<<10)
	huge := strings.Repeat("h", 250<<10) // more than the 208 KiB a datagram takes
	write(t, a, "hello\n<3>failed: <4> stays\n", mid[:64<<10], mid[64<<10:]+"\n", huge+"\n", "partial")

	e := fj.next(t)
	want := map[string]string{"MESSAGE": "hello", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "my\napp", "binary:SYSLOG_IDENTIFIER": "yes",
		"SYSLOG_PID": "777", "HANDOFF_GENERATION": "5", "HANDOFF_WORKER": "1", "HANDOFF_PID": "777", "HANDOFF_STREAM": "stderr"}
	if len(e) != len(want) {
		t.Errorf("entry %q, want %q", e, want)
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s=%q, want %q", k, e[k], v)
		}
	}
	if e = fj.next(t); e["MESSAGE"] != "failed: <4> stays" || e["PRIORITY"] != "3" {
		t.Errorf("MESSAGE=%q PRIORITY=%q, want the <3> prefix taken as the priority", e["MESSAGE"], e["PRIORITY"])
	}
	if e = fj.next(t); e["MESSAGE"] != mid || e["HANDOFF_LINE_BREAK"] != "" {
		t.Errorf("the line in two pieces: %d bytes, break %q; want one entry of %d", len(e["MESSAGE"]), e["HANDOFF_LINE_BREAK"], len(mid))
	}
	if e = fj.next(t); e["MESSAGE"] != huge || e["HANDOFF_PID"] != "777" {
		t.Errorf("the line past a datagram: %d bytes, want %d, with its fields (%q)", len(e["MESSAGE"]), len(huge), e["HANDOFF_PID"])
	}
	a.Close()
	if e = fj.next(t); e["MESSAGE"] != "partial" || e["HANDOFF_LINE_BREAK"] != "eof" {
		t.Errorf("MESSAGE=%q HANDOFF_LINE_BREAK=%q, want partial, eof", e["MESSAGE"], e["HANDOFF_LINE_BREAK"])
	}
	if out.String() != "" {
		t.Errorf("the stream got %q, want nothing", out.String())
	}
}

// TestJournalGone: a line journald refuses (it went away) goes to the
// stream instead.
func TestJournalGone(t *testing.T) {
	fj := newFakeJournal(t)
	j, err := outtag.OpenJournal(fj.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Stream: "stdout", Journal: j})
	a := k.Source(outtag.Tags{Gen: 2, PID: 9})
	write(t, a, "to the journal\n")
	if e := fj.next(t); e["MESSAGE"] != "to the journal" {
		t.Fatalf("MESSAGE=%q", e["MESSAGE"])
	}
	fj.conn.Close()
	write(t, a, "to the stream\n")
	if got := out.String(); got != "[gen=2 worker=0 pid=9] to the stream\n" {
		t.Errorf("stream %q", got)
	}
	if _, err := outtag.OpenJournal(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("OpenJournal of a path where nothing listens: no error")
	}
}

// TestJournalRestart: after journald restarts — its socket closed, a new
// one at the same path — the next line reaches the new journald, not the
// stream.
func TestJournalRestart(t *testing.T) {
	fj := newFakeJournal(t)
	j, err := outtag.OpenJournal(fj.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Stream: "stdout", Journal: j})
	a := k.Source(outtag.Tags{Gen: 3, PID: 11})
	write(t, a, "before\n")
	if e := fj.next(t); e["MESSAGE"] != "before" {
		t.Fatalf("MESSAGE=%q", e["MESSAGE"])
	}
	fj.conn.Close()
	if err := os.Remove(fj.path); err != nil {
		t.Fatal(err)
	}
	again := newFakeJournalAt(t, fj.path)
	write(t, a, "after\n", "and on\n")
	for _, want := range []string{"after", "and on"} {
		if e := again.next(t); e["MESSAGE"] != want || e["HANDOFF_GENERATION"] != "3" {
			t.Errorf("MESSAGE=%q HANDOFF_GENERATION=%q, want %q from the restarted journald", e["MESSAGE"], e["HANDOFF_GENERATION"], want)
		}
	}
	if out.String() != "" {
		t.Errorf("the stream got %q, want nothing", out.String())
	}
}

// TestIsJournalStream: $JOURNAL_STREAM names a stream by device and inode.
func TestIsJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for env, want := range map[string]bool{
		"":                                      false,
		"garbage":                               false,
		itoa(st.Dev) + ":" + itoa(st.Ino):       true,
		itoa(st.Dev) + ":" + itoa(st.Ino+1):     false,
		itoa(st.Dev) + ":" + itoa(st.Ino) + "x": false,
	} {
		t.Setenv("JOURNAL_STREAM", env)
		if got := outtag.IsJournalStream(f); got != want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", env, got, want)
		}
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
