//go:build linux

package config

import (
	"net"
	"strings"

	"github.com/handoff-dev/handoff/listener"
)

// quicScheme is the prefix of a --listen address whose socket is QUIC's:
// a UDP socket of its own for each generation, steered (see parseQUIC).
const quicScheme = "quic://"

// MaxQUICDraining is the most --max-draining a quic:// socket allows: the
// draining generations, the serving one and the one starting must have
// slots of their own among the 32 that QUIC connection IDs tell apart
// (quicsteer.MaxGenerations, which config does not import: it would link
// cilium/ebpf into the package; the supervisor's tests check the two agree).
const MaxQUICDraining = 30

// parseQUIC parses the address of --listen [NAME=]quic://HOST:PORT (s is
// the whole flag, for errors): a UDP address with a fixed port, since every
// generation binds its own socket to it.
func parseQUIC(s, addr string) (listener.Addr, error) {
	hp := strings.TrimPrefix(addr, quicScheme)
	a, err := listener.Parse("udp://" + hp)
	if err != nil {
		return listener.Addr{}, Usagef("handoff run: --listen %s: %v", s, strings.ReplaceAll(err.Error(), "udp://", "quic://"))
	}
	if _, port, err := net.SplitHostPort(hp); err != nil || port == "0" {
		return listener.Addr{}, Usagef("handoff run: --listen %s: give a fixed port, as in quic://0.0.0.0:443: every generation binds its own socket to it", s)
	}
	return a, nil
}

// checkQUIC refuses what a quic:// socket cannot work with.
func checkQUIC(cfg *Config) error {
	var q *Listen
	for i := range cfg.Listens {
		if cfg.Listens[i].QUIC {
			q = &cfg.Listens[i]
			break
		}
	}
	switch {
	case q == nil:
		return nil
	case cfg.Workers > 1:
		return Usagef("handoff run: --listen %s with --workers %d: QUIC's steering gives each generation one socket, not one per worker — give --workers 1, or use several handoff run on other ports", q, cfg.Workers)
	case cfg.MaxDraining > MaxQUICDraining:
		return Usagef("handoff run: --listen %s with --max-draining %d: QUIC connection IDs tell %d generations apart, the serving one, a new one and at most %d draining — give --max-draining %d or less", q, cfg.MaxDraining, MaxQUICDraining+2, MaxQUICDraining, MaxQUICDraining)
	case cfg.Ready.Kind == "accept":
		return Usagef("handoff run: --listen %s with --ready accept: a generation's QUIC socket is its own, which accept cannot see served — use --ready notify (upgrader's Ready sends READY=1)", q)
	}
	return nil
}

// String returns the address as given: NAME=ADDR, with quic:// for a QUIC
// socket.
func (l Listen) String() string {
	a := l.Addr.String()
	if l.QUIC {
		a = quicScheme + l.Addr.Address
	}
	return l.Name + "=" + a
}
