// Package holdback holds new connections back from listening sockets that
// are about to close for good, so that no client is accepted by the kernel
// and then reset: a connection still queued on a listening socket when its
// last holder closes it is reset, after its client has sent its request.
//
// A Set holds back each socket given to Hold — a TCP socket drops the
// segments that open connections (a classic BPF socket filter), so that the
// kernel completes no new handshake and a client sends its SYN again a
// second later (to be refused once the socket is closed); a Unix socket's
// file is removed, so that a new connect fails at once — and Wait waits
// until the program, still accepting, has taken what already queued. Then
// the sockets may close.
//
// The filter is on the socket, not on a descriptor: it holds back every
// process that shares the socket. Hold only sockets nobody will go on
// serving. On systems other than Linux, Hold does nothing.
package holdback
