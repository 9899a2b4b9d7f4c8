//go:build linux

package config

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Ready says how a generation shows it is ready.
type Ready struct {
	// Kind is "notify", "accept", "http", "tcp" or "delay".
	Kind string
	// Target is the URL for http, HOST:PORT for tcp.
	Target string
	// Delay is the wait for delay.
	Delay time.Duration
}

// String returns the mode as --ready takes it.
func (m Ready) String() string {
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

// ParseReady parses --ready or --health: notify, accept, an http(s) URL,
// tcp://HOST:PORT or delay:DURATION. A bad value is an ErrUsage error that
// says what to give.
func ParseReady(s string) (Ready, error) {
	switch {
	case s == "notify":
		return Ready{Kind: "notify"}, nil
	case s == "accept":
		return Ready{Kind: "accept"}, nil
	case strings.HasPrefix(s, "delay:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "delay:"))
		if err != nil || d < 0 {
			return Ready{}, Usagef("handoff run: --ready %s: bad duration — use delay:2s", s)
		}
		return Ready{Kind: "delay", Delay: d}, nil
	case strings.HasPrefix(s, "tcp://"):
		hp := strings.TrimPrefix(s, "tcp://")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return Ready{}, Usagef("handoff run: --ready %s: %v — use tcp://127.0.0.1:9090", s, err)
		}
		return Ready{Kind: "tcp", Target: hp}, nil
	case strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return Ready{}, Usagef("handoff run: --ready %s: not a URL — use http://127.0.0.1:9090/healthz", s)
		}
		return Ready{Kind: "http", Target: s}, nil
	}
	return Ready{}, Usagef("handoff run: --ready %s: unknown mode — use notify, accept, http://HOST:PORT/PATH, tcp://HOST:PORT or delay:DURATION", s)
}

// ForWorker returns the mode for worker w: an http or tcp probe of worker w
// goes to the given port plus w, where that worker (its index is in
// HANDOFF_WORKER) serves it alone; the other modes are the same for all.
func (m Ready) ForWorker(w int) Ready {
	if w == 0 || (m.Kind != "http" && m.Kind != "tcp") {
		return m
	}
	host, portStr, err := net.SplitHostPort(m.ProbeAddr())
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

// ProbeAddr returns the HOST:PORT an http or tcp mode connects to, or "".
func (m Ready) ProbeAddr() string {
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

// CheckProbe refuses an http or tcp probe whose address reaches one of the
// sockets handoff holds (held, with their names): every generation serves
// those, so the serving one would answer the probe for the one starting,
// and a broken release would be called ready.
func (m Ready) CheckProbe(held []net.Addr, names []string) error {
	hp := m.ProbeAddr()
	if hp == "" {
		return nil
	}
	host, portStr, err := net.SplitHostPort(hp)
	if err != nil {
		return nil
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return Usagef("handoff run: --ready %s: bad port %q", m, portStr)
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
				return Usagef("handoff run: --ready %s: %s is the socket %q (%s) that handoff holds and every generation serves — "+
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
