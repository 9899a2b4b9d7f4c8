// Package doors readies a stop of handoff run: it holds new connections
// back from the sockets that close for good with the generations (through
// package holdback: a SYN-dropping socket filter on TCP listeners, a Unix
// listener's file removed, a wait until the generations have taken what
// already queued), and leaves alone those its service manager holds too,
// which outlive the stop (Close); then it closes handoff's own copies of the
// sockets (Release), so that a socket stops listening when its last
// generation closes it.
package doors
