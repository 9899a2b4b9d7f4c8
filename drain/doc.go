// Package drain serves HTTP and stops without losing a request.
//
// http.Server.Shutdown closes idle keep-alive connections at once, racing a
// client that is sending its next request on one; it refuses new
// connections from the moment it is called, while a load balancer may still
// send for a while; and it cancels nothing at its deadline. A Drainer does
// what Shutdown does without those losses, and Run wraps it with a stop
// delay for the program every Go tutorial teaches:
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	srv := &http.Server{Addr: ":8080", Handler: mux}
//	st, err := drain.ListenAndServe(ctx, srv, drain.Options{StopDelay: 5 * time.Second, HealthPath: "/healthz"})
//
// Measured with SIGTERM while the load goes on for 2 s more (400 requests/s,
// 500 ms requests in flight), as a load balancer sends until it has
// deregistered an instance: the tutorial's ListenAndServe and Shutdown
// failed 815 of 1,223 requests (refused from the signal on); this program,
// with a 3 s stop delay, 0 of 1,218 (examples/shutdown, TestStopUnderLoad).
//
// # What a drain guarantees
//
// Once Drain is called (by Run: when ctx is done, after the stop delay):
//
//   - No new connection is accepted: each listener is closed. Where the
//     socket is shared with another process (a new generation after a
//     handover, see package upgrader), that process accepts from then on.
//   - Every response from then on carries "Connection: close", so a client
//     sends its next request on a new connection.
//   - A request in flight runs to its end, up to the deadline of Drain's
//     context. At the deadline, the contexts of the requests still running
//     are cancelled; half a second later their connections are closed and
//     counted in Stats.Cut.
//   - An idle keep-alive connection is closed only once it has been idle for
//     the idle grace after the drain began, and only if no request waits
//     unread on it and the kernel has received nothing on it since it was
//     seen idle; that check and the FIN are one step, so a request is lost
//     only if the client sends it while the FIN is on its way, which
//     HTTP/1.1 cannot rule out.
//   - With MoveIdle, an idle keep-alive connection is first given to
//     another owner instead (package upgrader's Options.MoveIdleConns
//     moves it to the new generation): its server's read is stopped
//     without consuming a byte, and the connection goes on there, or, if
//     the owner does not take it, here as if nothing had happened.
//   - HTTP/2 connections (net/http's own HTTP/2, over TLS or h2c with prior
//     knowledge) get a GOAWAY instead of the FIN, in the two steps of RFC
//     9113, section 6.8: first one naming stream 2^31-1, with a PING; once
//     the client has answered the PING — every stream it opened before it
//     saw the first GOAWAY has then been read — or after a second without
//     an answer, the one naming the last stream the server will serve. So
//     the client sends its next request on a new connection, and no stream
//     it opened is refused, even by a client that would not retry it (one
//     that opens a stream after its ACK of the PING, which the protocol
//     forbids, still has it refused). A connection that has served a stream
//     gets them at once; one that never has, after the idle grace. Each
//     closes about a second after its last stream ends. This holds alike
//     with Go 1.26 and Go 1.27.
//   - Hijacked connections (WebSockets and the like) are waited for until
//     their handler closes them — tell handlers to finish with OnDrain — or
//     cut at the deadline. The Drainer learns of their close through
//     whatever wraps the connection: TLS from tls.NewListener, and wrappers
//     of your own around the listener, provided each says what it wraps with
//     a NetConn() net.Conn method (as *tls.Conn does) or Unwrap() net.Conn. A
//     wrapper that hides its socket leaves the Drainer blind to the close: it
//     logs so once, and such connections are waited for until the deadline.
//   - Drain returns when every connection is closed, or at the deadline; it
//     then closes the servers and waits for their Serve goroutines.
//
// Stats reports what happened: the connections open when the drain began,
// those closed idle, sent a GOAWAY, hijacked and cut, and how long it took.
//
// Before the drain, Pause stops the servers taking new connections off their
// listeners, which stay open, until Resume; Activity counts the connections
// accepted and the requests begun and answered. The upgrader's bake window
// uses both: the old generation pauses, so that new connections reach the
// new one alone, whose Activity says it serves.
package drain
