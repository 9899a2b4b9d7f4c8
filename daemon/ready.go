//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/procfs"
)

// readyMode says how a generation shows it is ready.
type readyMode struct {
	// Kind is "notify", "accept", "http", "tcp" or "delay".
	Kind string
	// Target is the URL for http, HOST:PORT for tcp.
	Target string
	// Delay is the wait for delay.
	Delay time.Duration
}

// --ready accept looks at a starting generation's process every acceptPoll,
// and at its whole process tree every acceptTree looks (scanning /proc
// costs about 0.8 ms with 75 processes on the 2-core machine measured, one
// process 0.1 ms: BenchmarkWaiters).
const (
	acceptPoll = 10 * time.Millisecond
	acceptTree = 5
)

// String returns the mode as --ready takes it.
func (m readyMode) String() string {
	switch m.Kind {
	case "http":
		return m.Target
	case "tcp":
		return "tcp://" + m.Target
	case "delay":
		return "delay:" + m.Delay.String()
	}
	return m.Kind
}

func parseReady(s string) (readyMode, error) {
	switch {
	case s == "notify":
		return readyMode{Kind: "notify"}, nil
	case s == "accept":
		return readyMode{Kind: "accept"}, nil
	case strings.HasPrefix(s, "delay:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "delay:"))
		if err != nil || d < 0 {
			return readyMode{}, usagef("handoff run: --ready %s: bad duration — use delay:2s", s)
		}
		return readyMode{Kind: "delay", Delay: d}, nil
	case strings.HasPrefix(s, "tcp://"):
		hp := strings.TrimPrefix(s, "tcp://")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return readyMode{}, usagef("handoff run: --ready %s: %v — use tcp://127.0.0.1:9090", s, err)
		}
		return readyMode{Kind: "tcp", Target: hp}, nil
	case strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return readyMode{}, usagef("handoff run: --ready %s: not a URL — use http://127.0.0.1:9090/healthz", s)
		}
		return readyMode{Kind: "http", Target: s}, nil
	}
	return readyMode{}, usagef("handoff run: --ready %s: unknown mode — use notify, accept, http://HOST:PORT/PATH, tcp://HOST:PORT or delay:DURATION", s)
}

// forWorker returns the mode for worker w: an http or tcp probe of worker w
// goes to the given port plus w, where that worker (its index is in
// HANDOFF_WORKER) serves it alone; the other modes are the same for all.
func (m readyMode) forWorker(w int) readyMode {
	if w == 0 || (m.Kind != "http" && m.Kind != "tcp") {
		return m
	}
	host, portStr, err := net.SplitHostPort(m.probeAddr())
	if err != nil {
		return m
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return m
	}
	hp := net.JoinHostPort(host, strconv.Itoa(port+w))
	if m.Kind == "tcp" {
		m.Target = hp
		return m
	}
	u, err := url.Parse(m.Target)
	if err != nil {
		return m
	}
	u.Host = hp
	m.Target = u.String()
	return m
}

// probeAddr returns the HOST:PORT an http or tcp mode connects to, or "".
func (m readyMode) probeAddr() string {
	switch m.Kind {
	case "tcp":
		return m.Target
	case "http":
		u, err := url.Parse(m.Target)
		if err != nil {
			return ""
		}
		if u.Port() == "" {
			return net.JoinHostPort(u.Hostname(), "80")
		}
		return u.Host
	}
	return ""
}

// checkProbe refuses an http or tcp probe whose address reaches one of the
// sockets handoff holds (held, with their names): every generation serves
// those, so the serving one would answer the probe for the one starting,
// and a broken release would be called ready.
func (m readyMode) checkProbe(held []net.Addr, names []string) error {
	hp := m.probeAddr()
	if hp == "" {
		return nil
	}
	host, portStr, err := net.SplitHostPort(hp)
	if err != nil {
		return nil
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return usagef("handoff run: --ready %s: bad port %q", m, portStr)
	}
	ips := probeIPs(host)
	for i, a := range held {
		ta, ok := a.(*net.TCPAddr)
		if !ok || ta.Port != port {
			continue
		}
		bound, _ := netip.AddrFromSlice(ta.IP)
		bound = bound.Unmap()
		for _, ip := range ips {
			if bound.IsUnspecified() || ip.IsUnspecified() || ip == bound {
				return usagef("handoff run: --ready %s: %s is the socket %q (%s) that handoff holds and every generation serves — "+
					"the serving generation would answer the probe for the new one; use --ready accept (no change to the program) "+
					"or notify (the program sends READY=1), or probe an address only the new generation serves",
					m, hp, names[i], ta)
			}
		}
	}
	return nil
}

// probeIPs resolves a probe's host the way a dial would: "" is the
// unspecified address, and names resolve to all their addresses.
func probeIPs(host string) []netip.Addr {
	if host == "" {
		return []netip.Addr{netip.IPv4Unspecified()}
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.SplitN(host, "%", 2)[0], ".")); err == nil {
		return []netip.Addr{ip.Unmap()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs
}

// probe reports readiness for the http, tcp and delay modes: it returns nil
// once the generation is ready, or ctx's error. Notify is handled by the
// generation's own notify socket, accept by waitAccepting.
func (m readyMode) probe(ctx context.Context) error {
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
		if m.check(ctx, client) {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m readyMode) check(ctx context.Context, client *http.Client) bool {
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
