// Package sockdiag reads the kernel's view of sockets through Linux's
// sock_diag netlink interface: the established TCP connections on some
// ports with their tcp_info (what each received and sent, and when), the
// accept queues of listening TCP and Unix sockets, and the connections half
// open. handoff's readiness, bake, liveness and stop checks are built on
// it. Linux only: elsewhere the package is empty.
package sockdiag
