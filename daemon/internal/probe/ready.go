//go:build linux

package probe

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

// Ready reports readiness by m, for the http, tcp and delay modes: it
// returns nil once the process is ready, or ctx's error when ctx ends
// first. Notify is the caller's (the process's notify socket), accept
// WaitAccepting's.
func Ready(ctx context.Context, m config.Ready) error {
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
	client := Client()
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

// NotAccepting is why --ready accept has not yet seen a process ready.
type NotAccepting struct {
	Sockets []string // "NAME (ADDR)" of each socket nobody waits on
	Notes   []string // what could not be inspected
}

// Error says which sockets nobody waits on, and what could not be looked at.
func (e *NotAccepting) Error() string {
	msg := "no process of it waits for connections on " + strings.Join(e.Sockets, ", ")
	if len(e.Notes) > 0 {
		msg += " (" + strings.Join(e.Notes, "; ") + ")"
	}
	return msg
}

// Socket is a listening socket the checks watch: its inode, and its name
// and address for messages.
type Socket struct {
	Inode      uint64
	Name, Addr string
}

// WaitAccepting returns nil once some process of the tree rooted at root
// (root and its descendants, or its process group) waits for connections on
// every one of socks — see procfs.Waiters — or, when ctx ends first, a
// *NotAccepting that says which sockets nobody waits on.
func WaitAccepting(ctx context.Context, root int, socks []Socket) error {
	want := make(map[uint64]bool, len(socks))
	for _, sk := range socks {
		want[sk.Inode] = true
	}
	tick := time.NewTicker(acceptPoll)
	defer tick.Stop()
	last := &NotAccepting{}
	for i := 0; ; i++ {
		// The whole process tree every acceptTree looks, the program's own
		// process in between.
		found, notes, err := procfs.Waiters(root, want, i%acceptTree == 0)
		if err == nil {
			last = &NotAccepting{Notes: notes}
			for _, sk := range socks {
				if !found[sk.Inode] {
					last.Sockets = append(last.Sockets, fmt.Sprintf("%s (%s)", sk.Name, sk.Addr))
				}
			}
			if len(last.Sockets) == 0 {
				return nil
			}
		} else {
			last = &NotAccepting{Notes: []string{err.Error()}}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return last
		}
	}
}
