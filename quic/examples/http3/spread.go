package main

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// goawayGap is the time between two GOAWAYs of a drain: at most 100
// clients a second are sent to the next generation, not all together.
// Sent together, they make every client dial it in the same instant, and
// on 2 busy cores 200 handshakes at once outlast a client's 3 s timeout.
// The GOAWAYs take at most a quarter of the drain timeout, closer together
// if there are more connections.
const goawayGap = 10 * time.Millisecond

// connServers serves each QUIC connection with an http3.Server of its own,
// so that a drain can send each its GOAWAY at a time of its own (an
// http3.Server's Shutdown sends it on all its connections together).
type connServers struct {
	handler http.Handler
	mu      sync.Mutex
	servers map[*http3.Server]struct{}
}

func newConnServers(h http.Handler) *connServers {
	return &connServers{handler: h, servers: map[*http3.Server]struct{}{}}
}

// serve accepts connections from l until it fails, and returns its error.
func (c *connServers) serve(l *fastListener) error {
	for {
		conn, err := l.Accept(context.Background())
		if err != nil {
			return err
		}
		s := &http3.Server{Handler: c.handler}
		c.mu.Lock()
		c.servers[s] = struct{}{}
		c.mu.Unlock()
		go func(conn *quicgo.Conn) {
			_ = s.ServeQUICConn(conn)
			c.mu.Lock()
			delete(c.servers, s)
			c.mu.Unlock()
		}(conn)
	}
}

// shutdown sends the connections their GOAWAYs goawayGap apart, or evenly
// over limit if that is shorter,
// and waits until their requests are done or ctx ends; it returns
// ctx's error if any connection was cut, else nil.
func (c *connServers) shutdown(ctx context.Context, limit time.Duration) error {
	c.mu.Lock()
	list := make([]*http3.Server, 0, len(c.servers))
	for s := range c.servers {
		list = append(list, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(list))
	var tick *time.Ticker
	if gap := min(goawayGap, limit/time.Duration(max(len(list), 1))); len(list) > 1 && gap > 0 {
		tick = time.NewTicker(gap)
		defer tick.Stop()
	}
	for i, s := range list {
		if i > 0 && tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		wg.Go(func() { errs[i] = s.Shutdown(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
