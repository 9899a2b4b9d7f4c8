package main

import (
	"context"
	"net"

	quicgo "github.com/quic-go/quic-go"
)

// acceptors is how many goroutines wait in quic-go's Accept at once.
//
// quic-go hands a connection whose handshake is done to a goroutine waiting
// in Accept, or queues it, 32 at most, and refuses it (CONNECTION_REFUSED)
// when the queue is full. A release fills it: the old generation's GOAWAY
// reaches every client at once, and they all dial the new generation at
// once, while the one goroutine of http3.Server.ServeListener that accepts
// waits for a CPU behind the handshakes' own. Measured with 200 clients
// through 10 releases on 2 busy cores: 54 of 47,635 requests failed and 48
// connections broke so. With this many waiting, a connection finds one
// ready in all but a burst larger than acceptors+32.
const acceptors = 64

// acceptQueue is how many accepted connections wait for ServeListener.
const acceptQueue = 1024

// fastListener is an http3.QUICListener that takes the connections off a
// quic-go listener as soon as their handshake is done.
type fastListener struct {
	ln    *quicgo.EarlyListener
	conns chan *quicgo.Conn
	done  chan struct{} // closed when every acceptor has returned
	err   error         // the error that ended them, once done is closed
}

func newFastListener(ln *quicgo.EarlyListener) *fastListener {
	l := &fastListener{ln: ln, conns: make(chan *quicgo.Conn, acceptQueue), done: make(chan struct{})}
	errs := make(chan error, acceptors)
	for range acceptors {
		go func() {
			for {
				c, err := ln.Accept(context.Background())
				if err != nil {
					errs <- err
					return
				}
				l.conns <- c
			}
		}()
	}
	go func() {
		for range acceptors {
			if err := <-errs; l.err == nil {
				l.err = err
			}
		}
		close(l.done)
	}()
	return l
}

// Accept returns the next connection; once the listener is closed, those
// already accepted, then the error that closed it.
func (l *fastListener) Accept(ctx context.Context) (*quicgo.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		select {
		case c := <-l.conns:
			return c, nil
		default:
			return nil, l.err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr returns the listener's address.
func (l *fastListener) Addr() net.Addr { return l.ln.Addr() }

// Close closes the quic-go listener; Accept returns the connections
// already accepted, then quic.ErrServerClosed.
func (l *fastListener) Close() error { return l.ln.Close() }
