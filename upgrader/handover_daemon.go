package upgrader

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
)

// HandoverChannelsEnv names the variable by which `handoff run --handover`
// passes each process it starts its two handover channels: "IN,OUT", two
// descriptor numbers (see package handover).
const HandoverChannelsEnv = "HANDOFF_HANDOVER_FDS"

// InheritedHandover returns a Handover over the handover channels that
// `handoff run --handover` passed this process (HandoverChannelsEnv),
// rather than over tableflip's: for a program run by handoff (daemon mode),
// which has no Upgrader. Package handover wraps it; most programs use that.
// Call it once, before the program says READY=1: it tells handoff at once
// that this process adopts connections. It takes the variable out of the
// environment and makes the channels close-on-exec.
//
// Its results:
//
//	(h, nil)   the channels were passed: h adopts from the process this one
//	           replaces, and offers to the one that replaces it
//	(h, nil)   no channels were passed (not run by handoff, or without
//	           --handover): Adopted is closed at once, Offer returns
//	           ErrNotHandingOver, and the program drains as before
//	(nil, err) the variable is malformed, or names descriptors that are
//	           not SOCK_SEQPACKET sockets
//
// A second call returns a Handover that adopts nothing and hands nothing
// over. logger, if nil, is slog.Default().
func InheritedHandover(opts HandoverOptions, logger *slog.Logger) (*Handover, error) {
	if logger == nil {
		logger = slog.Default()
	}
	u := &Upgrader{log: logger, readyC: make(chan struct{}), exitC: make(chan struct{})}
	cc := &channelCore{}
	u.core = cc
	if v, ok := os.LookupEnv(HandoverChannelsEnv); ok {
		os.Unsetenv(HandoverChannelsEnv)
		in, out, err := parseChannels(v)
		if err != nil {
			return nil, err
		}
		if err := cc.open(u, in, out); err != nil {
			return nil, err
		}
	}
	return u.Handover(opts), nil
}

// parseChannels reads HandoverChannelsEnv's value.
func parseChannels(v string) (in, out int, err error) {
	a, b, ok := strings.Cut(v, ",")
	in, err1 := strconv.Atoi(a)
	out, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || in < 3 || out < 3 || in == out {
		return 0, 0, fmt.Errorf("upgrader: %s=%q: want two descriptor numbers, 3 or more, as \"IN,OUT\" (handoff run --handover sets it; unset it otherwise)", HandoverChannelsEnv, v)
	}
	return in, out, nil
}

// HandedOver reports whether this generation hands its connections over
// to the next one, so that Offer can succeed. In library mode it is
// Upgrader.HandedOver. Over inherited channels (InheritedHandover) it is
// true once handoff said that the process replacing this one adopts
// connections: handoff says so before it sends this process its stop
// signal, so a program that asks once the stop signal arrived has the
// answer. It never turns back to false.
func (h *Handover) HandedOver() bool {
	if cc, ok := h.u.core.(*channelCore); ok {
		return cc.successorAdopts(h.u)
	}
	return h.u.HandedOver()
}

// channelCore stands in for tableflip under InheritedHandover: it holds the
// channel to adopt from, claimed by the Handover through File (the only
// method it calls: the embedded interface is nil), and tells when the
// successor adopts.
type channelCore struct {
	core
	mu       sync.Mutex
	in       *os.File
	exitOnce sync.Once
}

// File returns the channel to adopt from, under handoverName, once.
func (c *channelCore) File(name string) (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name != handoverChannelName || c.in == nil {
		return nil, nil
	}
	f := c.in
	c.in = nil
	return f, nil
}
