// Package linetail copies a stream through unchanged while keeping its last
// lines, so that a failure report can quote what a process printed last.
package linetail

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
)

// Tail copies what it reads to a writer and keeps the last lines.
type Tail struct {
	max   int
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// New starts copying r to w in a new goroutine, keeping the last max
// non-blank lines, and closes r at EOF or on a read error.
func New(r io.ReadCloser, w io.Writer, max int) *Tail {
	t := &Tail{max: max, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			// ReadSlice returns at a newline or when the buffer is full,
			// so the copy keeps pace with a writer that never ends a line.
			chunk, err := br.ReadSlice('\n')
			if len(chunk) > 0 {
				_, _ = w.Write(chunk)
				t.add(string(chunk))
			}
			if err != nil && err != bufio.ErrBufferFull {
				return
			}
		}
	}()
	return t
}

// NewLive is New for a writer that cuts the stream into lines itself: each
// read is passed to w as it comes, newline or not, so that nothing waits
// here for a line's end; w is closed at EOF (or a read error), before Done
// is closed. The last lines are kept as New keeps them, a line longer than
// 64 KiB in pieces.
func NewLive(r io.ReadCloser, w io.WriteCloser, max int) *Tail {
	t := &Tail{max: max, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer w.Close()
		defer r.Close()
		buf := make([]byte, 64<<10)
		var part []byte // the start of a line, for the tail
		for {
			n, err := r.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				for b := buf[:n]; len(b) > 0; {
					i := bytes.IndexByte(b, '\n')
					if i < 0 {
						part = append(part, b...)
						if len(part) >= 64<<10 {
							t.add(string(part))
							part = part[:0]
						}
						break
					}
					t.add(string(part) + string(b[:i]))
					part, b = part[:0], b[i+1:]
				}
			}
			if err != nil {
				if len(part) > 0 {
					t.add(string(part))
				}
				return
			}
		}
	}()
	return t
}

func (t *Tail) add(chunk string) {
	line := strings.TrimRight(chunk, "\r\n")
	if strings.TrimSpace(line) == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// Last returns the last lines read so far, oldest first.
func (t *Tail) Last() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

// Done is closed when the stream has ended and everything read was copied.
func (t *Tail) Done() <-chan struct{} { return t.done }
