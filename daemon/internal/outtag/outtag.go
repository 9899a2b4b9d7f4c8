//go:build linux

package outtag

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Format is how a Sink writes a tagged line to its stream.
type Format int

const (
	// Text writes the line after a prefix, "[gen=3 worker=0 pid=1234] ".
	Text Format = iota
	// JSON writes one JSON object per line (see the package doc).
	JSON
)

// MaxLine is the most a Source holds of a line that has not ended: four
// times a pipe's buffer, so that a line written at once in pieces of
// 64 KiB is passed on whole up to 256 KiB. A longer line is passed on in
// pieces of MaxLine bytes (cut before a UTF-8 sequence, not inside one).
const MaxLine = 256 << 10

// DefaultIdle is how long a Source holds the start of a line whose end does
// not come, when Options.Idle is 0: the pieces of one long write arrive
// back to back, a prompt or a progress bar's dots do not.
const DefaultIdle = 500 * time.Millisecond

// Line breaks: why a piece of a line was passed on before its newline, as
// journald's _LINE_BREAK= says it.
const (
	breakSize = "line-max" // MaxLine bytes held
	breakIdle = "idle"     // Options.Idle passed with no more of it
	breakEOF  = "eof"      // the stream ended
)

// Options are a Sink's.
type Options struct {
	Format Format
	// Stream names the stream, "stdout" or "stderr": JSON's "stream" and
	// the journal's HANDOFF_STREAM.
	Stream string
	// Journal, if not nil, is where the lines go instead, each an entry;
	// a line the journal refuses is written to the stream in Format.
	Journal *Journal
	// Idle is how long the start of a line is held waiting for its end;
	// 0 is DefaultIdle.
	Idle time.Duration
}

// Sink is a stream that several processes' output is passed on to, tagged:
// handoff's stdout or stderr. Its methods are safe for concurrent use.
type Sink struct {
	w   io.Writer
	opt Options

	mu   sync.Mutex // held while a Source writes to w
	open *Source    // text: whose line w was left inside, if any
}

// NewSink returns a sink writing to w, as opt says.
func NewSink(w io.Writer, opt Options) *Sink {
	if opt.Idle <= 0 {
		opt.Idle = DefaultIdle
	}
	return &Sink{w: w, opt: opt}
}

// Tags are what a Source's lines are tagged with.
type Tags struct {
	Gen, Worker, PID int
	// Ident is the journal's SYSLOG_IDENTIFIER: the program's name.
	Ident string
}

// Source is one process's stream into a Sink: the lines written to it are
// passed on tagged. Write and Close are safe for concurrent use with the
// Sink's other Sources; Write is called by one goroutine at a time.
type Source struct {
	sink   *Sink
	prefix []byte // text: the prefix; JSON: the object from gen to "line":"
	fields []byte // the journal entry's fields other than MESSAGE and PRIORITY

	mu     sync.Mutex
	part   []byte // the start of a line whose newline has not come
	mid    bool   // text: the last piece written ended inside a line
	closed bool
	seq    uint64 // counts arm and disarm, so that a stale idle timer does nothing
	timer  *time.Timer
	now    []byte // JSON: the time of the lines being passed on
	out    []byte // what goes to the stream next
	entry  []byte // the journal entry being built
}

// Source returns the stream of the process tags names into s.
func (s *Sink) Source(t Tags) *Source {
	src := &Source{sink: s}
	switch s.opt.Format {
	case JSON:
		b := append([]byte(nil), `","gen":`...)
		b = strconv.AppendInt(b, int64(t.Gen), 10)
		b = append(b, `,"worker":`...)
		b = strconv.AppendInt(b, int64(t.Worker), 10)
		b = append(b, `,"gen_pid":`...)
		b = strconv.AppendInt(b, int64(t.PID), 10)
		b = append(b, `,"stream":"`...)
		b = appendJSONString(b, []byte(s.opt.Stream))
		src.prefix = append(b, `","line":"`...)
	default:
		src.prefix = []byte("[gen=" + strconv.Itoa(t.Gen) + " worker=" + strconv.Itoa(t.Worker) + " pid=" + strconv.Itoa(t.PID) + "] ")
	}
	if s.opt.Journal != nil {
		src.fields = journalFields(t, s.opt.Stream)
	}
	return src
}

// Write passes on the lines p ends and holds the start of the one it leaves
// open (see the package doc). It returns len(p) and nil, or os.ErrClosed
// after Close: what the stream refuses is dropped, as a terminal drops what
// it cannot show, so that the process's pipe is always drained.
func (s *Source) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	n := len(p)
	s.begin()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if len(s.part) == 0 && i >= 0 && i <= MaxLine {
			s.line(p[:i], "")
			p = p[i+1:]
			continue
		}
		end := i
		if i < 0 {
			end = len(p)
		}
		take := min(end, MaxLine-len(s.part))
		s.part = append(s.part, p[:take]...)
		p = p[take:]
		if take == end && i >= 0 {
			s.line(s.part, "")
			s.part = s.part[:0]
			p = p[1:]
			continue
		}
		if len(s.part) >= MaxLine {
			cut := runeCut(s.part)
			s.line(s.part[:cut], breakSize)
			s.part = append(s.part[:0], s.part[cut:]...)
		}
	}
	s.end()
	if len(s.part) > 0 {
		s.arm()
	} else {
		s.disarm()
	}
	return n, nil
}

// Close passes on what is held of a line left open, and ends s: later
// writes fail. It is safe to call twice.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.disarm()
	k := s.sink
	if len(s.part) > 0 {
		s.begin()
		s.line(s.part, breakEOF)
		s.end()
	} else if k.opt.Journal == nil && k.opt.Format == Text {
		k.mu.Lock()
		if s.mid && k.open == s {
			_, _ = k.w.Write([]byte{'\n'})
			k.open = nil
		}
		k.mu.Unlock()
	}
	s.closed, s.part, s.out, s.entry = true, nil, nil, nil
	return nil
}

// begin starts a batch of lines: for the stream, it takes the sink's lock,
// which end releases, and notes the time for JSON.
func (s *Source) begin() {
	k := s.sink
	if k.opt.Journal != nil {
		return
	}
	k.mu.Lock()
	if k.opt.Format == JSON {
		s.now = time.Now().AppendFormat(s.now[:0], time.RFC3339Nano)
	}
}

// end writes the batch to the stream, in one write.
func (s *Source) end() {
	k := s.sink
	if k.opt.Journal != nil {
		return
	}
	if len(s.out) > 0 {
		_, _ = k.w.Write(s.out)
	}
	if cap(s.out) > 4*MaxLine {
		s.out = nil
	}
	s.out = s.out[:0]
	k.mu.Unlock()
}

// line passes on b, a line or (brk not "") a piece of one.
func (s *Source) line(b []byte, brk string) {
	k := s.sink
	wasMid := s.mid
	// The newline of a line whose pieces went before: nothing more to
	// pass on, but, in text, the newline.
	tail := wasMid && brk == "" && len(b) == 0
	s.mid = brk == breakSize || brk == breakIdle
	if k.opt.Journal != nil {
		if tail {
			return
		}
		s.entry = appendEntry(s.entry[:0], b, s.fields, !wasMid, brk)
		if err := k.opt.Journal.send(s.entry); err != nil {
			s.fallback(b, brk)
		}
		return
	}
	if k.opt.Format == JSON {
		if !tail {
			s.out = s.appendJSON(s.out, b, brk)
		}
		return
	}
	cont := wasMid && k.open == s
	if k.open != nil && k.open != s {
		s.out = append(s.out, '\n') // another's line, left open
	}
	k.open = nil
	if tail && !cont {
		return // another's output ended the line already
	}
	if !cont {
		s.out = append(s.out, s.prefix...)
	}
	s.out = append(s.out, b...)
	if s.mid {
		k.open = s
	} else {
		s.out = append(s.out, '\n')
	}
}

// appendJSON appends the JSON object of b to dst.
func (s *Source) appendJSON(dst, b []byte, brk string) []byte {
	dst = append(dst, `{"time":"`...)
	dst = append(dst, s.now...)
	dst = append(dst, s.prefix...)
	dst = appendJSONString(dst, b)
	if brk != "" {
		dst = append(dst, `","line_break":"`...)
		dst = append(dst, brk...)
	}
	return append(dst, "\"}\n"...)
}

// fallback writes to the stream a line the journal refused.
func (s *Source) fallback(b []byte, brk string) {
	k := s.sink
	var out []byte
	if k.opt.Format == JSON {
		s.now = time.Now().AppendFormat(s.now[:0], time.RFC3339Nano)
		out = s.appendJSON(nil, b, brk)
	} else {
		out = append(append(append(out, s.prefix...), b...), '\n')
	}
	k.mu.Lock()
	_, _ = k.w.Write(out)
	k.mu.Unlock()
}

// arm (re)starts the wait for the end of the line held; disarm stops it.
func (s *Source) arm() {
	s.disarm()
	seq := s.seq
	s.timer = time.AfterFunc(s.sink.opt.Idle, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.seq != seq || s.closed || len(s.part) == 0 {
			return
		}
		s.begin()
		s.line(s.part, breakIdle)
		s.end()
		s.part = s.part[:0]
	})
}

func (s *Source) disarm() {
	s.seq++
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// runeCut returns where to cut b, MaxLine bytes or more long: at MaxLine,
// or up to 3 bytes before, where the UTF-8 sequence MaxLine is inside of
// starts.
func runeCut(b []byte) int {
	b = b[:MaxLine]
	for i := len(b) - 1; i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}
