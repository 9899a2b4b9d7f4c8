package daemon

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// readyMode says how a generation shows it is ready.
type readyMode struct {
	// Kind is "notify", "http", "tcp" or "delay".
	Kind string
	// Target is the URL for http, HOST:PORT for tcp.
	Target string
	// Delay is the wait for delay.
	Delay time.Duration
}

// String returns the mode as --ready takes it.
func (m readyMode) String() string {
	switch m.Kind {
	case "http", "tcp":
		if m.Kind == "tcp" {
			return "tcp://" + m.Target
		}
		return m.Target
	case "delay":
		return "delay:" + m.Delay.String()
	}
	return m.Kind
}

func parseReady(s string) (readyMode, error) {
	switch {
	case s == "notify":
		return readyMode{Kind: "notify"}, nil
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
	return readyMode{}, usagef("handoff run: --ready %s: unknown mode — use notify, http://HOST:PORT/PATH, tcp://HOST:PORT or delay:DURATION", s)
}

// probe reports readiness for the http, tcp and delay modes: it returns nil
// once the generation is ready, or ctx's error. Notify is handled by the
// generation's own notify socket.
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
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
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
