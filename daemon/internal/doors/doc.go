// Package doors holds new connections back for a stop, so that no client is
// accepted by the kernel and then reset: a SYN-dropping socket filter on TCP
// listeners, the path of a Unix listener removed, a wait until the
// generations have taken what already queued (Close); then handoff's own
// copies of the sockets are closed (Release), so that a socket stops
// listening when its last generation closes it. A socket that a service
// manager holds too is left open: it outlives the stop.
package doors
