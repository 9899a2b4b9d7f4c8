#!/usr/bin/env python3
"""A line protocol whose connections move to the next process under
`handoff run --handover` (Python's side of examples/lines): each line a
client sends is answered, in order, with "COUNT PID LINE" — COUNT the lines
this connection has sent so far (its state), PID the process that answered.
Clients may pipeline as many lines as they like.

On SIGTERM, if the process replacing this one adopts (handover.handed_over()),
every connection is offered between two lines with its count and the part of
a line read so far; the new process answers on, counting on. A connection
that cannot move is drained: answered on for --drain-timeout seconds, then
closed.

    handoff run --handover --listen 127.0.0.1:7000 -- python3 lines.py
"""
import os
import selectors
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import handoff  # noqa: E402

DRAIN_TIMEOUT = float(os.environ.get("LINES_DRAIN_TIMEOUT", "10"))
PID = os.getpid()


def uvarint(n):
    """n as Go's binary.AppendUvarint writes it: examples/lines's state, so
    that a connection can move between the Go and the Python program."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(b):
    n = shift = 0
    for x in b:
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return n
        shift += 7
    return 0


class Conn:
    def __init__(self, sock, count=0, pending=b""):
        self.sock, self.count, self.buf = sock, count, bytearray(pending)
        self.key = sock.fileno()
        sock.setblocking(False)

    def answer(self):
        """Answer every whole line buffered; False once the connection is gone."""
        out = bytearray()
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            self.count += 1
            out += b"%d %d %s\n" % (self.count, PID, bytes(self.buf[:i]))
            del self.buf[:i + 1]
        if out:
            try:
                self.sock.setblocking(True)
                self.sock.sendall(out)
                self.sock.setblocking(False)
            except OSError:
                return False
        return True


def main():
    # Before READY=1: handoff learns that this process adopts.
    h = handoff.Handover()
    ln = handoff.listener()
    ln.setblocking(False)
    sel = selectors.DefaultSelector()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    adopted = []
    lock = threading.Lock()

    def adopt():
        for sock, state, unread in h.adopted():
            with lock:
                adopted.append(Conn(sock, read_uvarint(state), unread))
            try:
                wake_w.send(b"a")
            except OSError:
                pass

    threading.Thread(target=adopt, daemon=True).start()
    sel.register(ln, selectors.EVENT_READ, "listen")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    conns = {}

    def add(c):
        if c.answer():
            conns[c.key] = c
            sel.register(c.sock, selectors.EVENT_READ, c)
        else:
            c.sock.close()

    def drop(c):
        sel.unregister(c.sock)
        del conns[c.key]
        c.sock.close()

    handoff.notify("READY=1")
    deadline = None
    moved = drained = 0
    while True:
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + DRAIN_TIMEOUT
            sel.unregister(ln)
            ln.close()
            if h.handed_over():
                # Between two lines: nothing reads now. Answer what is whole,
                # then offer each with its count and the partial line.
                items = [c for c in list(conns.values()) if c.answer()]
                for c in items:  # before an offer closes its socket
                    sel.unregister(c.sock)
                    del conns[c.key]
                ok = h.offer_many([(c.sock, uvarint(c.count), bytes(c.buf)) for c in items])
                for c, moved_ in zip(items, ok):
                    if moved_:
                        moved += 1
                    else:
                        conns[c.key] = c
                        sel.register(c.sock, selectors.EVENT_READ, c)
            drained = len(conns)
        if deadline is not None and (not conns or time.monotonic() > deadline):
            break
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
        for key, _ in sel.select(timeout):
            if key.data == "listen":
                try:
                    s, _ = ln.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                add(Conn(s))
            elif key.data == "wake":
                try:
                    wake_r.recv(4096)
                except BlockingIOError:
                    pass
                with lock:
                    news, adopted[:] = list(adopted), []
                for c in news:
                    add(c)
            else:
                c = key.data
                try:
                    b = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    b = b""
                if not b:
                    drop(c)
                    continue
                c.buf += b
                if not c.answer():
                    drop(c)
    for c in list(conns.values()):
        drop(c)
    print(f"lines.py done: handed_over={moved} drained={drained}", flush=True)


if __name__ == "__main__":
    main()
