package drain

import "net"

// Activity counts what a Drainer's servers have done since their Serve.
type Activity struct {
	// Accepted is the number of connections taken off the listeners.
	Accepted uint64
	// Requests is the number of requests whose handler began.
	Requests uint64
	// Answered is the number of those answered: the handler wrote a
	// header or body, hijacked the connection, or returned (net/http then
	// writes the response).
	Answered uint64
}

// Activity returns what the servers have done so far. An upgrade's bake
// window reads it to see that a new generation serves. The counts include
// HTTP/2 streams as requests; "OPTIONS *", which net/http answers itself,
// is not counted.
func (d *Drainer) Activity() Activity {
	return Activity{Accepted: d.accepted.Load(), Requests: d.requests.Load(), Answered: d.answered.Load()}
}

// Pause stops the servers taking connections off their listeners, which
// stay open: new connections wait in the sockets' accept queues, or are
// taken by another process that holds the same sockets, until Resume.
// Connections already accepted are served as before. Where the listener
// has deadlines (TCP and Unix listeners), an Accept in progress is cut
// short, and Pause returns once it has: a connection that comes after
// Pause returns waits. Where it has none (TLS), the Accept in progress may
// still take one more. Pause is idempotent; Drain ends a pause.
func (d *Drainer) Pause() {
	d.mu.Lock()
	if d.resumed != nil {
		d.mu.Unlock()
		return
	}
	d.resumed = make(chan struct{})
	lns := append([]*trackedListener(nil), d.listeners...)
	d.mu.Unlock()
	for _, l := range lns {
		l.interrupt()
	}
	for _, l := range lns {
		l.settle()
	}
}

// Resume ends a pause: the servers accept again, beginning with the
// connections that waited. It does nothing if not paused.
func (d *Drainer) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resumed != nil {
		close(d.resumed)
		d.resumed = nil
	}
}

// Paused reports whether accepting is paused.
func (d *Drainer) Paused() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resumed != nil
}

// waitResumed returns once accepting is not paused, or net.ErrClosed once
// closed is closed.
func (d *Drainer) waitResumed(closed <-chan struct{}) error {
	for {
		d.mu.Lock()
		ch := d.resumed
		d.mu.Unlock()
		if ch == nil {
			return nil
		}
		select {
		case <-ch:
		case <-closed:
			return net.ErrClosed
		}
	}
}
