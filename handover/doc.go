// Package handover moves established connections from one generation of a
// program run by `handoff run` to the next, instead of draining them: the
// daemon-mode counterpart of upgrader.Handover, with the same API shape and
// the same guarantees (see upgrader.Handover's documentation: every
// connection owned by exactly one generation at any time, prepare then
// commit or abort, no byte lost or repeated).
//
// # How it works
//
// With --handover, handoff gives each process it starts two SOCK_SEQPACKET
// channels of its own, inherited after the listening sockets (not counted in
// LISTEN_FDS) and named by HANDOFF_HANDOVER_FDS="IN,OUT":
//
//   - IN carries connections from the process this one replaces. A program
//     that adopts writes the library's hello ('H' VERSION) on it before it
//     says READY=1: New does that.
//   - OUT carries connections to the process that replaces this one. When
//     handoff replaces process N by N+1 at the same worker index (a reload,
//     a roll of --workers, a replacement) and N+1 said hello, handoff
//     writes that hello on N's OUT before it sends N its stop signal
//     ("your successor adopts": HandedOver turns true), then relays every
//     message between N's OUT and N+1's IN, with the descriptors
//     SCM_RIGHTS carries, closing its own copies at once. N+1 that did not
//     say hello: handoff closes N's OUT instead, and N's connections drain
//     as without a handover.
//
// The two programs thus speak the library's protocol unchanged ('I' item
// with its descriptor, 'P' prepared, 'R' refused, 'C' commit; since
// version 2, 'J' a pack of up to eight items and 'A' a pack of answers),
// and handoff parses nothing but what it counts (each message's kind, a
// pack's count and refusals) and its descriptors. It passes the hello on
// with the version capped at the one it knows, so that the old process
// sends nothing it cannot carry. If either process dies or its channel closes, handoff closes
// the other's: an abort for both, which the library's rules make safe — the
// old generation keeps what it did not commit, the new one closes what it
// prepared and was not committed. Two channels rather than one, because a
// generation's adopting side reads its channel until the end while its
// offering side may start before that end (its predecessor still drains).
//
// A program started without --handover, or by something other than
// handoff, adopts nothing (Adopted is closed at once) and hands nothing
// over (Offer returns ErrNotHandingOver): it drains, as before.
//
// # Doubtful edge
//
// The library's commit is one message with no answer. Relayed, it passes
// through handoff: if handoff itself dies (SIGKILL) after the old
// generation wrote a commit and before handoff passed it on, the old
// generation has let those connections go and the new one closes them as
// uncommitted: they end. Only handoff's own death opens this window.
//
// # Other languages
//
// Any program that can pass descriptors can speak the protocol on these
// channels (helpers/python does, with socket.send_fds and recv_fds).
// Node's core cannot receive a descriptor over a Unix socket: Node programs
// do not adopt, and their connections drain as today.
package handover
