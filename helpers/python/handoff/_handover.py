"""Connections that move under `handoff run --handover`: this process adopts
the established connections of the process it replaces, and offers its own to
the one that replaces it, over the two channels handoff passes
(HANDOFF_HANDOVER_FDS="IN,OUT"), speaking the Go library's protocol
(upgrader/handover_linux.go) with socket.send_fds and socket.recv_fds:

    'H' VERSION                   hello: this process adopts (on IN, before READY=1)
    'I' ID STATELEN STATE UNREAD  one connection offered, its descriptor attached
    'P' ID                        prepared: held, untouched
    'R' ID REASON                 refused: the sender keeps it
    'C' ID...                     commit: the prepared ones are the receiver's

This helper speaks version 1. Version 2 adds packs of up to eight
connections in one message ('J') and of their answers ('A'); a Go process
sends them only to a process whose hello said 2, so this one never gets one.

ID is a little-endian uint64, STATELEN a uint32. A connection belongs to one
process at any time: the sender's until the commit, the receiver's after. If
the channel ends before the commit (the other process died, or gave up), the
sender keeps its connections and the receiver closes what it prepared."""
from __future__ import annotations

import os
import queue
import resource
import select
import socket
import struct
import threading
import time
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

ENV = "HANDOFF_HANDOVER_FDS"
VERSION = 1
MAX_STATE = 64 << 10
MAX_UNREAD = 64 << 10
DEFAULT_BATCH = 64
DEFAULT_TIMEOUT = 2.0

Adoption = Tuple[socket.socket, bytes, bytes]  # (connection, state, unread)


def _hung_up(c: socket.socket) -> bool:
    """Whether the peer of c has closed its end, without waiting."""
    p = select.poll()
    p.register(c, select.POLLRDHUP)
    return any(ev & (select.POLLHUP | select.POLLRDHUP | select.POLLERR) for _, ev in p.poll(0))


def _out_of_descriptors() -> str:
    """Why a connection offered came without its descriptor, and the fix."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    how = "LimitNOFILE= or ulimit -n"
    if hard == resource.RLIM_INFINITY or soft < hard:
        how += ", or resource.setrlimit up to the hard limit at start"
    return (f"no descriptor arrived: the new process is out of descriptors "
            f"(RLIMIT_NOFILE {soft}, hard {hard}: raise it with {how})")


class Handover:
    """This process's side of moving connections between the processes of a
    program run by `handoff run --handover`. Make it once, before READY=1
    (handoff.notify("READY=1")): it tells handoff at once that this process
    adopts, and the connections of the process it replaces arrive on
    adopted().

    Not run by handoff with --handover (no HANDOFF_HANDOVER_FDS), it adopts
    nothing (adopted() ends at once) and offers nothing (offer returns
    False for each): the program drains as without it.

    check(state) may refuse a connection offered to this process by raising;
    the old process then keeps and drains it. batch is how many connections
    move in one round trip; timeout bounds, in seconds, how long the old
    process waits for the new one to answer a batch (past it the rest of the
    handover is aborted: those connections stay with this process)."""

    def __init__(self, check: Optional[Callable[[bytes], None]] = None,
                 batch: int = DEFAULT_BATCH, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._check = check
        self._batch = max(1, batch)
        self._timeout = timeout if timeout > 0 else DEFAULT_TIMEOUT
        self._adopted: "queue.Queue[Optional[Adoption]]" = queue.Queue()
        self._out: Optional[socket.socket] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._broken = False
        self._hello_read = False
        self._next = 0
        value = os.environ.pop(ENV, None)
        if value is None:
            self._adopted.put(None)
            return
        fds = value.split(",")
        if len(fds) != 2 or not all(f.isdigit() and int(f) >= 3 for f in fds) or fds[0] == fds[1]:
            raise ValueError(f"handoff: {ENV}={value!r}: want two descriptor numbers, 3 or more, as IN,OUT "
                             "(handoff run --handover sets it; unset it otherwise)")
        chans = []
        for f in fds:
            s = socket.socket(fileno=int(f))
            if s.type != socket.SOCK_SEQPACKET:
                raise ValueError(f"handoff: {ENV}: descriptor {f} is not a SOCK_SEQPACKET socket")
            s.set_inheritable(False)
            chans.append(s)
        inp, self._out = chans
        try:
            inp.sendall(bytes([ord("H"), VERSION]))
        except OSError:
            inp.close()
            self._adopted.put(None)
            return
        threading.Thread(target=self._receive, args=(inp,), name="handoff-handover-in", daemon=True).start()

    # The new side.

    def adopted(self) -> Iterator[Adoption]:
        """Yield each connection adopted from the previous process, as
        (connection, state, unread) — unread are bytes that process read and
        did not use, which come before anything the connection reads — and
        return once no more can come (the previous process has exited). The
        connection is this process's, blocking, and may be offered again."""
        while True:
            a = self._adopted.get()
            if a is None:
                self._adopted.put(None)  # a second reader ends too
                return
            yield a

    def _receive(self, c: socket.socket) -> None:
        prepared = {}
        reset = False
        gone = False  # the other end is closed: no answer is written any more

        def reply(b: bytes) -> None:
            # An answer the other end cannot read (it is gone) is dropped:
            # what it committed before is still to read. None is written
            # once it is gone: on kernels before 6.10, a write to a closed
            # SOCK_SEQPACKET peer could purge this end's own queue. A peer
            # that closed with no answer of ours unread leaves no reset to
            # read: ask first whether it hung up.
            nonlocal gone
            if gone or _hung_up(c):
                gone = True
                return
            try:
                c.sendall(b)
            except OSError:
                gone = True

        try:
            while True:
                try:
                    msg, fds, flags, _ = socket.recv_fds(c, 16 + MAX_STATE + MAX_UNREAD, 4, socket.MSG_CMSG_CLOEXEC)
                except ConnectionResetError:
                    if reset:
                        break
                    # The other end was closed with answers of ours unread:
                    # the kernel says so once, ahead of the messages sent
                    # before it, which are still to read — commits among
                    # them, whose connections are this process's.
                    reset = gone = True
                    continue
                except OSError:
                    break
                if not msg:
                    for fd in fds:
                        os.close(fd)
                    break
                kind = msg[:1]
                if kind == b"I" and len(msg) >= 13:
                    ident, slen = struct.unpack_from("<QI", msg, 1)
                    state, unread = msg[13:13 + slen], msg[13 + slen:]
                    reason = ""
                    if self._stopping.is_set():
                        reason = "the new process is stopping"
                    elif not fds or flags & socket.MSG_CTRUNC:
                        reason = _out_of_descriptors()
                    elif self._check is not None:
                        try:
                            self._check(bytes(state))
                        except Exception as e:  # the program's own refusal
                            reason = f"check: {e}"
                    if reason:
                        for fd in fds:
                            os.close(fd)
                        reply(b"R" + struct.pack("<Q", ident) + reason.encode())
                        continue
                    for fd in fds[1:]:
                        os.close(fd)
                    prepared[ident] = (fds[0], bytes(state), bytes(unread))
                    reply(b"P" + struct.pack("<Q", ident))
                elif kind == b"C":
                    for i in range(1, len(msg) - 7, 8):
                        (ident,) = struct.unpack_from("<Q", msg, i)
                        p = prepared.pop(ident, None)
                        if p is not None:
                            conn = socket.socket(fileno=p[0])
                            conn.setblocking(True)
                            self._adopted.put((conn, p[1], p[2]))
                else:
                    for fd in fds:
                        os.close(fd)
        finally:
            # Not committed: the previous process's; closed here without a
            # shutdown, so that the connection lives on there.
            for fd, _, _ in prepared.values():
                os.close(fd)
            c.close()
            self._adopted.put(None)

    # The old side.

    def handed_over(self) -> bool:
        """Report whether the process replacing this one adopts connections,
        so that offer can move them. handoff says so before it sends this
        process its stop signal: ask once the signal has arrived. Once True,
        this process adopts no more connections from its own predecessor."""
        with self._lock:
            if self._hello_read:
                return not self._broken
            out = self._out
            if out is None or self._broken:
                return False
            try:
                b = out.recv(2, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return False
            if len(b) < 2 or b[:1] != b"H":
                return False
            out.recv(16)  # the hello, read
            self._hello_read = True
            self._stopping.set()
            return True

    def offer(self, conn: socket.socket, state: bytes = b"", unread: bytes = b"") -> bool:
        """Offer one connection; see offer_many."""
        return self.offer_many([(conn, state, unread)])[0]

    def offer_many(self, items: Sequence[Adoption]) -> List[bool]:
        """Hand each (connection, state, unread) to the process replacing
        this one — state at most 64 KiB of the program's own, unread at most
        64 KiB read from the connection and not used — in batches, each
        answered then committed, and return for each whether it moved.

        True: the connection is the new process's; this process's socket is
        closed (never shut down) and must not be used. False: it is still
        this process's, untouched: serve it on and drain it. Offer a
        connection between two messages, with nothing reading or writing it
        meanwhile, so that no byte is consumed twice or lost: what the client
        sends meanwhile waits in the kernel for whichever process owns it.

        Blocks for at most about timeout per batch. Thread-safe."""
        results = [False] * len(items)
        if not self.handed_over():
            return results
        with self._lock:
            for start in range(0, len(items), self._batch):
                if self._broken:
                    break
                self._send_batch(items, start, min(start + self._batch, len(items)), results)
        return results

    def _send_batch(self, items: Sequence[Adoption], lo: int, hi: int, results: List[bool]) -> None:
        out = self._out
        assert out is not None
        ids = {}
        try:
            out.settimeout(self._timeout)
            for i in range(lo, hi):
                conn, state, unread = items[i]
                if len(state) > MAX_STATE or len(unread) > MAX_UNREAD:
                    continue  # over the limits: it stays, and drains
                self._next += 1
                msg = b"I" + struct.pack("<QI", self._next, len(state)) + bytes(state) + bytes(unread)
                socket.send_fds(out, [msg], [conn.fileno()])
                ids[self._next] = i
            refused = set()
            deadline = time.monotonic() + self._timeout
            answered = 0
            while answered < len(ids):
                out.settimeout(max(deadline - time.monotonic(), 0.001))
                msg = out.recv(4096)
                if not msg:
                    raise OSError("the new process closed the handover channel")
                if len(msg) < 9:
                    continue
                (ident,) = struct.unpack_from("<Q", msg, 1)
                if ident not in ids:
                    continue
                answered += 1
                if msg[:1] == b"R":
                    refused.add(ident)
            commit = b"C" + b"".join(struct.pack("<Q", k) for k in ids if k not in refused)
            out.settimeout(self._timeout)
            out.sendall(commit)
        except OSError:
            # Aborted before the commit: everything of this batch stays here,
            # and the closed channel tells the new process to let go.
            self._broken = True
            out.close()
            return
        for ident, i in ids.items():
            if ident not in refused:
                items[i][0].close()
                results[i] = True
