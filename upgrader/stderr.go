package upgrader

import (
	"bufio"
	"io"
	"strings"
	"sync"
)

// tailLines is how many lines of a new generation's stderr a failure report
// keeps.
const tailLines = 5

// tail copies r to w and keeps its last lines. done is closed at EOF.
type tail struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newTail(r io.ReadCloser, w io.Writer) *tail {
	t := &tail{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				_, _ = io.WriteString(w, line)
				t.add(strings.TrimRight(line, "\r\n"))
			}
			if err != nil {
				return
			}
		}
	}()
	return t
}

func (t *tail) add(line string) {
	if strings.TrimSpace(line) == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

func (t *tail) last() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}
