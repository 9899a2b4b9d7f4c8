//go:build linux

package outtag_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"github.com/handoff-dev/handoff/internal/linetail"
)

// buffer is a stream the tests read while sources write to it.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until the buffer holds want, for 5 s at most.
func (b *buffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %.80q after 5 s in:\n%.2000s", want, b.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func write(t *testing.T, s *outtag.Source, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if n, err := s.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
}

// TestTextLines: each line gets its own source's prefix, whatever the
// pieces its lines come in; a line in pieces of a pipe's 64 KiB gets one.
func TestTextLines(t *testing.T) {
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Format: outtag.Text, Stream: "stdout"})
	a := k.Source(outtag.Tags{Gen: 3, Worker: 0, PID: 1234})
	b := k.Source(outtag.Tags{Gen: 4, Worker: 1, PID: 99})
	long := strings.Repeat("x", 150<<10)
	write(t, a, "one\ntw", "o\n\nthree\n")
	write(t, b, "b1\n")
	write(t, a, long[:64<<10], long[64<<10:128<<10], long[128<<10:], "\n")
	a.Close()
	b.Close()
	want := "[gen=3 worker=0 pid=1234] one\n[gen=3 worker=0 pid=1234] two\n[gen=3 worker=0 pid=1234] \n" +
		"[gen=3 worker=0 pid=1234] three\n[gen=4 worker=1 pid=99] b1\n[gen=3 worker=0 pid=1234] " + long + "\n"
	if got := out.String(); got != want {
		t.Fatalf("got %.300q…, want %.300q…", got, want)
	}
}

// TestTextNoNewline: the start of a line whose end does not come is passed
// on after Idle, tagged once; its rest follows on the same line, unless
// another source wrote meanwhile, which ends it; at EOF an open line ends.
func TestTextNoNewline(t *testing.T) {
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Format: outtag.Text, Idle: 5 * time.Millisecond})
	a := k.Source(outtag.Tags{Gen: 1, PID: 10})
	b := k.Source(outtag.Tags{Gen: 2, PID: 20})
	write(t, a, "Loading")
	out.waitFor(t, "[gen=1 worker=0 pid=10] Loading")
	write(t, a, "...")
	out.waitFor(t, "Loading...")
	write(t, a, " done\nnext")
	out.waitFor(t, "next")
	write(t, b, "from b\n")
	write(t, a, " line\n", "last")
	out.waitFor(t, "last")
	a.Close()
	b.Close()
	want := "[gen=1 worker=0 pid=10] Loading... done\n[gen=1 worker=0 pid=10] next\n[gen=2 worker=0 pid=20] from b\n" +
		"[gen=1 worker=0 pid=10]  line\n[gen=1 worker=0 pid=10] last\n"
	if got := out.String(); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// TestMaxLine: a line past MaxLine is passed on in pieces, the tag once;
// a line left open at the end is passed on at Close.
func TestMaxLine(t *testing.T) {
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Format: outtag.Text, Idle: time.Hour})
	a := k.Source(outtag.Tags{Gen: 1, PID: 10})
	// "é" is 2 bytes: the cut at MaxLine falls inside one, and is moved
	// before it.
	long := "a" + strings.Repeat("é", outtag.MaxLine/2+100)
	for p := long; len(p) > 0; p = p[min(len(p), 65536):] {
		write(t, a, p[:min(len(p), 65536)])
	}
	out.waitFor(t, long[:outtag.MaxLine-1]) // before its newline
	write(t, a, "\n")
	a.Close()
	if got, want := out.String(), "[gen=1 worker=0 pid=10] "+long+"\n"; got != want {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}

	var jout buffer
	k = outtag.NewSink(&jout, outtag.Options{Format: outtag.JSON, Stream: "stderr", Idle: time.Hour})
	a = k.Source(outtag.Tags{Gen: 1, PID: 10})
	write(t, a, long, "\n", "at eof")
	a.Close()
	objs := decode(t, jout.String())
	if len(objs) != 3 || objs[0].LineBreak != "line-max" || objs[1].LineBreak != "" || objs[0].Line+objs[1].Line != long {
		t.Fatalf("want 3 objects, the first broken at line-max, the first two holding the line: %d objects, breaks %q", len(objs), breaks(objs))
	}
	if objs[2].Line != "at eof" || objs[2].LineBreak != "eof" {
		t.Errorf("last object %q, break %q; want the line left open at the end, eof", objs[2].Line, objs[2].LineBreak)
	}
	if len(objs[0].Line) != outtag.MaxLine-1 {
		t.Errorf("first piece %d bytes, want %d (cut before the é MaxLine is inside of)", len(objs[0].Line), outtag.MaxLine-1)
	}
}

type object struct {
	Time      time.Time `json:"time"`
	Gen       int       `json:"gen"`
	Worker    int       `json:"worker"`
	PID       int       `json:"gen_pid"`
	Stream    string    `json:"stream"`
	Line      string    `json:"line"`
	LineBreak string    `json:"line_break"`
}

func decode(t *testing.T, s string) []object {
	t.Helper()
	var objs []object
	for _, l := range strings.SplitAfter(s, "\n") {
		if l == "" {
			continue
		}
		var o object
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("not a JSON object: %v: %.200q", err, l)
		}
		objs = append(objs, o)
	}
	return objs
}

func breaks(objs []object) []string {
	var b []string
	for _, o := range objs {
		b = append(b, o.LineBreak)
	}
	return b
}

// TestJSON: each line one valid object, whatever bytes it holds; a line
// that is JSON stays a string; a piece passed on early says why.
func TestJSON(t *testing.T) {
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Format: outtag.JSON, Stream: "stderr", Idle: 5 * time.Millisecond})
	a := k.Source(outtag.Tags{Gen: 7, Worker: 2, PID: 4321})
	lines := []string{
		`plain`,
		`{"level":"info","msg":"a \"quoted\" \\ path"}`,
		"tab\tcr\rbell\x07nul\x00esc\x1b del\x7f",
		"bad utf-8 \xff\xfe end, cut \xe2\x82",
		"unicode é ✓ 🚀 \u2028 \u2029",
		"",
	}
	before := time.Now()
	for _, l := range lines {
		write(t, a, l+"\n")
	}
	write(t, a, "no newline")
	out.waitFor(t, `"line":"no newline","line_break":"idle"`)
	write(t, a, " yet\n")
	a.Close()
	objs := decode(t, out.String())
	want := append(lines, "no newline", " yet")
	want[3] = "bad utf-8 \ufffd\ufffd end, cut \ufffd\ufffd"
	if len(objs) != len(want) {
		t.Fatalf("%d objects, want %d:\n%s", len(objs), len(want), out.String())
	}
	for i, o := range objs {
		if o.Line != want[i] || o.Gen != 7 || o.Worker != 2 || o.PID != 4321 || o.Stream != "stderr" {
			t.Errorf("object %d: %+v, want line %q gen 7 worker 2 gen_pid 4321 stream stderr", i, o, want[i])
		}
		if o.Time.Before(before.Add(-time.Second)) || o.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("object %d: time %v, not now", i, o.Time)
		}
	}
	if got := breaks(objs)[len(lines):]; strings.Join(got, ",") != "idle," {
		t.Errorf("line breaks %q, want idle, none", got)
	}
	if !strings.Contains(out.String(), `\u2028 \u2029`) {
		t.Errorf("U+2028 and U+2029 not escaped:\n%s", out.String())
	}
}

// TestPipeNoNewline: through a real pipe and linetail.NewLive, a program's
// prompt without a newline is seen, tagged, before it ends the line, and
// the tail keeps the lines.
func TestPipeNoNewline(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var out buffer
	k := outtag.NewSink(&out, outtag.Options{Format: outtag.Text, Idle: 5 * time.Millisecond})
	tail := linetail.NewLive(r, k.Source(outtag.Tags{Gen: 1, PID: 5}), 10)
	w.Write([]byte("first\nPassword: "))
	out.waitFor(t, "[gen=1 worker=0 pid=5] Password: ")
	w.Write([]byte("ok\nunfinished"))
	w.Close()
	select {
	case <-tail.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the tail did not end 5 s after the pipe closed")
	}
	if got, want := out.String(), "[gen=1 worker=0 pid=5] first\n[gen=1 worker=0 pid=5] Password: ok\n[gen=1 worker=0 pid=5] unfinished\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := strings.Join(tail.Last(), "|"); got != "first|Password: ok|unfinished" {
		t.Errorf("tail %q", got)
	}
}
