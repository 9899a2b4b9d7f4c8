"""serve_http: http.server with a thread per connection, drained without
loss — the accept queue taken, Connection: close once draining, an idle
keep-alive connection closed only once idle for idle_grace since the drain
began, with nothing received."""
from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Iterable, Optional, Set, Tuple, Type, TypedDict, cast

from ._activation import listener
from ._holdback import _take_queued
from ._quiet import shut_if_quiet
from ._sdnotify import notify

class DrainStats(TypedDict):
    """What serve_http, serve_wsgi, serve_asgi and run_asgi return once
    drained: connections shut at the deadline, and how long the drain took."""

    cut: int
    ms: int


_STOP_SIGNALS: Tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class DrainingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose handlers (see serve_http) drain their
    connections without loss once drain() is called."""

    daemon_threads = False
    block_on_close = True
    idle_grace = 1.0

    def __init__(self, sock: socket.socket, handler_class: Type[BaseHTTPRequestHandler]) -> None:
        super().__init__(sock.getsockname()[:2], handler_class, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.draining = False
        self.drain_began = 0.0  # time.monotonic() when drain() began
        self._wake_r, self._wake_w = os.pipe()  # readable once draining
        self._conns: Set[socket.socket] = set()
        self._lock = threading.Lock()

    def get_request(self) -> Tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setblocking(True)  # accepted sockets inherit nothing; be explicit
        return conn, addr

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted before its handler's thread starts: a drain that begins
        # meanwhile waits for it within its deadline.
        self.track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.track(request, False)
        super().shutdown_request(request)

    def drain(self, deadline: float) -> int:
        """Stop accepting, close idle connections once quiet, and wait for
        the rest until deadline (a time.monotonic() value). Returns how many
        connections were cut at the deadline."""
        self.shutdown()  # serve_forever returns
        self.drain_began = time.monotonic()
        self.draining = True
        os.write(self._wake_w, b"x")

        # Take what waits in the accept queue before closing the socket,
        # which would reset those connections (their requests may be sent).
        def take(conn: socket.socket, addr: Any) -> None:
            conn.setblocking(True)
            self.process_request(conn, addr)

        _take_queued(self.socket, take)
        self.socket.close()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    break
            time.sleep(0.05)
        with self._lock:
            left = list(self._conns)
        for conn in left:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()  # joins the handler threads
        return len(left)


class _DrainMixin(BaseHTTPRequestHandler if TYPE_CHECKING else object):
    """Handler side of the drain: wait for each request without blocking the
    drain, close an idle connection only when nothing was received for the
    server's idle_grace, and say Connection: close once draining."""

    def handle(self) -> None:
        srv, conn = cast(DrainingHTTPServer, self.server), self.connection
        # Counted from its accept to its close: process_request,
        # shutdown_request.
        self.close_connection = False
        idle_since = time.monotonic()
        while not self.close_connection:
            pending = self._pending()
            if pending is None:
                return  # closed by the client
            if pending:
                self.handle_one_request()
                idle_since = time.monotonic()
                continue
            # Idle for the grace since the drain began, as the Go
            # library counts: a connection the client uses meanwhile
            # gets Connection: close and ends without a race, and the
            # handler threads, all woken at once when the drain
            # begins, do not all close theirs in that stampede.
            if srv.draining and time.monotonic() - max(idle_since, srv.drain_began) >= srv.idle_grace:
                if shut_if_quiet(conn.fileno()) is False:
                    continue  # a request came in since the look above: serve it
                return  # idle and quiet for the grace: the FIN is sent, closed on return
            if srv.draining:
                select.select([conn], [], [], 0.05)
            else:
                select.select([conn, srv._wake_r], [], [])

    def _pending(self) -> Optional[bool]:
        """True if request bytes wait (in rfile's buffer or the socket),
        False if none, None at end of stream: a look that consumes nothing
        and never blocks."""
        conn = self.connection
        conn.setblocking(False)
        try:
            if self.rfile.peek(1):  # type: ignore[attr-defined]  # a BufferedReader: buffered, or read now without waiting
                return True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return None
        finally:
            try:
                conn.setblocking(True)
            except OSError:
                pass
        try:
            data = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return None
        return True if data else None

    def end_headers(self) -> None:
        if cast(DrainingHTTPServer, self.server).draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()


def serve_http(handler_class: Type[BaseHTTPRequestHandler], name: Optional[str] = None,
               address: Tuple[str, int] = ("127.0.0.1", 8080), idle_grace: float = 1.0, drain_timeout: float = 30.0,
               signals: Iterable[signal.Signals] = _STOP_SIGNALS) -> DrainStats:
    """Serve HTTP with handler_class (a BaseHTTPRequestHandler) on the socket
    listener(name, address) returns, say READY=1, and on one of signals
    drain as the package describes; return the drain's figures once done:
    {"cut": connections shut at the deadline, "ms": how long it took}.

    It blocks until the drain is over, and must be called from the main
    thread (Python runs signal handlers there)."""
    signals = tuple(signals)
    sock = listener(name, address)
    handler = type(handler_class.__name__, (_DrainMixin, handler_class), {})
    server = DrainingHTTPServer(sock, handler)
    server.idle_grace = idle_grace
    stop = threading.Event()
    for sig in signals:
        signal.signal(sig, lambda *_: stop.set())
    # The serving threads (and the handler threads they start) block the
    # stop signals, so that the kernel delivers them to this thread: Python
    # runs a handler only in the main thread, and a signal that lands on
    # another one does not wake it from stop.wait(). The wait wakes now and
    # then all the same.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    notify("READY=1")
    while not stop.wait(0.5):
        pass
    start = time.monotonic()
    cut = server.drain(start + drain_timeout)
    t.join()
    return {"cut": cut, "ms": int((time.monotonic() - start) * 1000)}
