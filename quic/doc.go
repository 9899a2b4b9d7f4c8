// Package quic gives QUIC (HTTP/3) servers zero-downtime restarts with
// package upgrader: each generation gets a UDP socket of its own, and every
// datagram reaches the generation that owns its connection, so that a
// release breaks no QUIC connection.
//
// Handing one UDP socket from generation to generation, as
// upgrader.ListenPacket does, suits datagram services that keep no state
// (DNS): both generations read the socket during the drain. For QUIC it
// breaks connections: a packet of the old generation's connection that the
// new one reads is lost to it. Here, instead:
//
//   - Each generation binds its own socket to the address, all of them in one
//     SO_REUSEPORT group, and a BPF_PROG_TYPE_SK_REUSEPORT program attached to
//     the group picks the socket for each datagram from a
//     BPF_MAP_TYPE_REUSEPORT_SOCKARRAY map indexed by generation slot.
//   - Every connection ID a generation issues carries its slot (the
//     Transport's ConnectionIDGenerator writes it; see CIDLen), so that
//     short-header packets, Handshake packets, and the client's Initial
//     packets once it knows the server's ID, go to the generation that owns
//     the connection; Initial and 0-RTT packets with the client's own
//     connection ID go to the newest ready generation. Datagrams that cannot
//     be QUIC, or whose generation is gone, are dropped.
//   - The maps outlive generations: each passes them to the next through the
//     upgrader (Upgrader.PassFile), so no file is left in /sys/fs/bpf and two
//     services never share them. A new generation puts its socket into the
//     map, and becomes the newest, only at Ready (Upgrader.OnReady): one that
//     dies before is never sent a packet, and the old one keeps every packet.
//
// A generation's slot is (generation-1) % MaxGenerations; Listen refuses a
// generation whose slot a generation MaxGenerations older still holds — it
// is still draining — with ErrTooManyGenerations, so that Upgrade fails and
// the serving generation serves on; upgrade again once the old one is gone.
//
// It needs Linux 4.19 or later (BPF_PROG_TYPE_SK_REUSEPORT and
// REUSEPORT_SOCKARRAY; tested on 6.18) and a process that may load BPF
// programs and create BPF maps: root, or CAP_BPF with CAP_NET_ADMIN (Linux
// 5.8 and later; CAP_SYS_ADMIN before). Without them Listen fails with an error that wraps ErrNoBPF and says
// what is missing; there is no silent fallback. The alternative then is
// upgrader.ListenPacket, with the breakage described above, or restarts
// that wait for QUIC connections to end.
//
// In use (see examples/http3 in this module for a whole server):
//
//	u, _ := upgrader.New(upgrader.Options{PIDFile: pidfile})
//	defer u.Stop()
//	s, err := quic.Listen(u, "0.0.0.0:443") // this generation's socket, steered
//	if err != nil { log.Fatal(err) }
//	ln, _ := s.Transport().ListenEarly(tlsConf, quicConf)
//	srv := &http3.Server{Handler: mux}
//	go srv.ServeListener(ln)
//	u.Ready() // the socket gets packets from here on
//	<-u.Exit()
//	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
//	srv.Shutdown(ctx) // GOAWAY; returns when the connections have ended
//	s.Close()
//
// Under handoff run --listen quic://ADDR the daemon binds each generation's
// socket, holds the program and the maps, and steers a generation's socket
// once it is ready (READY=1): Listen finds it in LISTEN_FDS (FromHandoff)
// instead of binding, and needs no privilege. The same program runs either
// way.
//
// This package is a module of its own, so that programs that do not serve
// QUIC build neither quic-go nor cilium/ebpf.
package quic
