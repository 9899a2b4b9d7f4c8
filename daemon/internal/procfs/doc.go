// Package procfs reads what /proc says of a process that handoff watches:
// its children and process tree, the sockets it holds, the sockets it waits
// on in accept, poll, select or epoll (how `--ready accept` tells a program
// is ready without its help), its state and its resident memory. It reads and
// never changes anything.
package procfs
