//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
)

// --ready accept looks at a starting generation's process every acceptPoll,
// and at its whole process tree every acceptTree looks (scanning /proc
// costs about 0.8 ms with 75 processes on the 2-core machine measured, one
// process 0.1 ms: BenchmarkWaiters).
const (
	acceptPoll = 10 * time.Millisecond
	acceptTree = 5
)

// probeReady reports readiness of m for the http, tcp and delay modes: it returns nil
// once the generation is ready, or ctx's error. Notify is handled by the
// generation's own notify socket, accept by waitAccepting.
func probeReady(ctx context.Context, m config.Ready) error {
	if m.Kind == "delay" {
		t := time.NewTimer(m.Delay)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	client := probeClient()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if check(ctx, client, m) {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// check reports whether one http or tcp probe of m succeeds: a 2xx answer,
// or a connection.
func check(ctx context.Context, client *http.Client, m config.Ready) bool {
	if m.Kind == "tcp" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", m.Target)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.Target, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// notAccepting is why --ready accept has not yet seen a generation ready.
type notAccepting struct {
	sockets []string // "NAME (ADDR)" of each socket nobody waits on
	notes   []string // what could not be inspected
}

func (e *notAccepting) Error() string {
	msg := "no process of it waits for connections on " + strings.Join(e.sockets, ", ")
	if len(e.notes) > 0 {
		msg += " (" + strings.Join(e.notes, "; ") + ")"
	}
	return msg
}

// waitAccepting returns nil once some process of generation g (pid root and
// its descendants, or its process group) waits for connections on every
// socket handed to it — see procfs.Waiters — or, when ctx ends first, a
// *notAccepting that says which sockets nobody waits on.
func (s *supervisor) waitAccepting(ctx context.Context, root int) error {
	want := make(map[uint64]bool, len(s.inodes))
	for _, ino := range s.inodes {
		want[ino] = true
	}
	tick := time.NewTicker(acceptPoll)
	defer tick.Stop()
	last := &notAccepting{}
	for i := 0; ; i++ {
		// The whole process tree every acceptTree looks, the program's own
		// process in between.
		found, notes, err := procfs.Waiters(root, want, i%acceptTree == 0)
		if err == nil {
			last = &notAccepting{notes: notes}
			for i, ino := range s.inodes {
				if !found[ino] {
					last.sockets = append(last.sockets, fmt.Sprintf("%s (%s)", s.names[i], s.addrs[i]))
				}
			}
			if len(last.sockets) == 0 {
				return nil
			}
		} else {
			last = &notAccepting{notes: []string{err.Error()}}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return last
		}
	}
}
