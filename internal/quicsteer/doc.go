// Package quicsteer is the BPF core of QUIC's steering between generations:
// the SO_REUSEPORT group's BPF_PROG_TYPE_SK_REUSEPORT program, its maps
// (REUSEPORT_SOCKARRAY by generation slot, the configuration, the
// counters), and the connection ID cookie the program reads. It imports
// cilium/ebpf but not quic-go, so that both its users link it without the
// other's dependencies:
//
//   - module github.com/handoff-dev/handoff/quic (library mode, where each
//     generation loads the program and passes the maps to the next), and
//   - the daemon (handoff run --listen quic://), which holds the program and
//     the maps itself and binds each generation's socket.
//
// Nothing that imports upgrader, drain, listener or systemd imports this
// package, so that programs that do not serve QUIC never link cilium/ebpf.
//
// The program, the maps' layout and the cookie are one contract: a
// generation's connection IDs (EncodeCookie) must be written with the key
// in the configuration map of the group its socket is in. It needs Linux
// 4.19 or later and a process that may create BPF maps and load BPF
// programs (root, or CAP_BPF with CAP_NET_ADMIN); Explain words the error
// otherwise.
package quicsteer
