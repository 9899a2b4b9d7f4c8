"""serve_asgi and run_asgi: an ASGI application served over HTTP/1.1 on
asyncio (see _http11 for the parser), drained as serve_http drains."""
from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
import urllib.parse
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Set, Tuple

from ._activation import listener
from ._holdback import _take_queued
from ._http11 import Request, _HTTPError, _reason, parse_request
from ._httpserver import _STOP_SIGNALS, DrainStats
from ._quiet import shut_if_quiet
from ._sdnotify import notify

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, Send], Awaitable[None]]


class _ASGIConnection(asyncio.Protocol):
    """One HTTP/1.1 connection of serve_asgi: requests parsed from what was
    received, each run through the ASGI application in turn; the server's
    drain closes it when idle and quiet for idle_grace."""

    transport: asyncio.Transport

    def __init__(self, server: _ASGIServer) -> None:
        self.srv = server
        self.buf = bytearray()
        self.task: Optional[asyncio.Future[None]] = None  # the request being served
        self.last = time.monotonic()  # when data last came or a response ended
        self.closed = False
        self.eof = False  # the client will send nothing more
        self.received = asyncio.Event()  # data came, or the connection closed
        self.writable = asyncio.Event()
        self.writable.set()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: connect_accepted_socket
        self.srv.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.last = time.monotonic()
        self.received.set()
        if self.task is None:
            self._next()

    def eof_received(self) -> bool:
        self.eof = True
        self.received.set()
        if self.task is None:
            self.transport.close()
        return True  # a request in flight still gets its answer

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.received.set()
        self.writable.set()
        self.srv.conns.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # requests

    def shut_if_idle(self) -> bool:
        """If no request is under way, none was received — not in the
        buffer, nor in the kernel's — and no response is still being sent,
        send the FIN in one step with that
        look (see _quiet) and say True: the caller closes the transport.
        False, with nothing done, if a request is under way or waits."""
        if self.task is not None or self.buf or self.transport.get_write_buffer_size() > 0:
            return False  # (a response still going out would be cut by the FIN)
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        return shut_if_quiet(sock.fileno()) is not False

    def _next(self) -> None:
        """Start the next request if the buffer holds a whole one."""
        try:
            req, expect = parse_request(self.buf)
        except _HTTPError as e:
            body = str(e).encode()
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()
            return
        if expect:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req is not None:
            self.task = asyncio.ensure_future(self._serve(req))

    async def _serve(self, req: Request) -> None:
        method, target, version, headers, body, keep = req
        path, _, query = target.partition("?")
        sock = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": version[5:],
            "method": method, "scheme": "http", "path": urllib.parse.unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "", "headers": headers,
            "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "state": dict(self.srv.state),
        }
        state: Dict[str, Any] = {"started": False, "chunked": False, "done": False, "close": not keep}
        sent_body = [False]

        async def receive() -> Message:
            if not sent_body[0]:
                sent_body[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            while not self.closed and not state["done"]:
                self.received.clear()
                await self.received.wait()
            return {"type": "http.disconnect"}

        async def send(msg: Message) -> None:
            if self.closed or state["done"]:
                return
            if msg["type"] == "http.response.start":
                state["status"], state["headers"] = msg["status"], list(msg.get("headers", []))
                return
            if msg["type"] != "http.response.body":
                return
            chunk, more = msg.get("body", b""), msg.get("more_body", False)
            out = bytearray()
            if not state["started"]:
                state["started"] = True
                names = {bytes(k).lower() for k, _ in state["headers"]}
                if self.srv.draining:
                    state["close"] = True
                out += b"HTTP/1.1 %d %s\r\n" % (state["status"], _reason(state["status"]))
                for k, v in state["headers"]:
                    if bytes(k).lower() != b"connection":
                        out += bytes(k) + b": " + bytes(v) + b"\r\n"
                if b"content-length" not in names and method != "HEAD":
                    if more:
                        state["chunked"] = True
                        out += b"Transfer-Encoding: chunked\r\n"
                    else:
                        out += b"Content-Length: %d\r\n" % len(chunk)
                if state["close"]:
                    out += b"Connection: close\r\n"
                out += b"\r\n"
            if method != "HEAD":
                if state["chunked"]:
                    if chunk:
                        out += b"%x\r\n%s\r\n" % (len(chunk), chunk)
                    if not more:
                        out += b"0\r\n\r\n"
                else:
                    out += chunk
            self.transport.write(bytes(out))
            if not more:
                state["done"] = True
            await self.writable.wait()

        try:
            await self.srv.app(scope, receive, send)
        except Exception as e:  # the application failed: a 500 if nothing was sent
            print(f"handoff: ASGI application failed: {e!r}", file=sys.stderr, flush=True)
            if not state["started"]:
                state["close"] = True
                self.transport.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            state["done"], state["close"] = True, True
        if not state["done"]:  # returned without finishing its response
            if state["started"] and state["chunked"]:
                self.transport.write(b"0\r\n\r\n")
            elif not state["started"]:
                self.transport.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            state["close"] = True
        self.task = None
        self.last = time.monotonic()
        if state["close"] or self.closed or (self.eof and not self.buf):
            self.transport.close()
        elif self.buf:
            self._next()


class _ASGIServer:
    """The connections of one serve_asgi, and whether it drains."""

    def __init__(self, app: ASGIApplication, sock: socket.socket, idle_grace: float) -> None:
        self.app, self.sock, self.idle_grace = app, sock, idle_grace
        self.conns: Set[_ASGIConnection] = set()
        # Accepted and not yet in conns (connection_made comes turns of
        # the loop later): the drain waits for these too.
        self.pending = 0
        self.draining = False
        self.state: Dict[str, Any] = {}

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                print(f"handoff: accept: {e}", file=sys.stderr, flush=True)
                return
            self._take(loop, conn)

    def _take(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        conn.setblocking(False)
        self.pending += 1

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(lambda: _ASGIConnection(self), conn)
            except OSError:
                conn.close()
            finally:
                self.pending -= 1

        asyncio.ensure_future(connect())

    async def _lifespan(self, kind: str, queue: asyncio.Queue[Message], done: asyncio.Queue[Message]) -> None:
        await queue.put({"type": "lifespan." + kind})
        msg = await done.get()
        if msg["type"].endswith(".failed"):
            raise RuntimeError(f"ASGI lifespan {kind} failed: {msg.get('message', '')}")


async def serve_asgi(app: ASGIApplication, name: Optional[str] = None,
                     address: Tuple[str, int] = ("127.0.0.1", 8080), idle_grace: float = 1.0,
                     drain_timeout: float = 30.0, signals: Iterable[signal.Signals] = _STOP_SIGNALS) -> DrainStats:
    """Serve an ASGI application (HTTP; lifespan events if it handles them)
    over HTTP/1.1 on the socket listener(name, address) returns, in the
    running asyncio loop; say READY=1 once it serves; on one of signals,
    drain as serve_http does; return its figures, {"cut", "ms"}. Request
    bodies are read whole before the application runs; responses stream
    (chunked when their length is not given). WebSocket scopes are not
    served: run such an application under an ASGI server of its own.

    asyncio programs that serve HTTP write their handler as an ASGI callable,
    which needs no framework: async def app(scope, receive, send)."""
    signals = tuple(signals)
    loop = asyncio.get_running_loop()
    sock = listener(name, address)
    sock.setblocking(False)
    srv = _ASGIServer(app, sock, idle_grace)

    # Lifespan: startup before serving, shutdown after the drain, where the
    # application takes part (an application that raises on the lifespan
    # scope does not use it).
    queue: asyncio.Queue[Message] = asyncio.Queue()
    done: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": srv.state}, queue.get, done.put))
    await queue.put({"type": "lifespan.startup"})
    getter = asyncio.ensure_future(done.get())
    await asyncio.wait([lifespan, getter], return_when=asyncio.FIRST_COMPLETED)
    use_lifespan = getter.done()
    if use_lifespan:
        msg = getter.result()
        if msg["type"] == "lifespan.startup.failed":
            raise RuntimeError("ASGI lifespan startup failed: " + msg.get("message", ""))
    else:
        getter.cancel()
        if lifespan.done() and not lifespan.cancelled():
            lifespan.exception()  # retrieved: an application without lifespan support raises on its scope

    stop = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sock.fileno(), srv._accept, loop)
    notify("READY=1")
    await stop.wait()

    start = time.monotonic()
    deadline = start + drain_timeout
    srv.draining = True
    loop.remove_reader(sock.fileno())
    _take_queued(sock, lambda conn, _: srv._take(loop, conn))  # before the socket closes
    await asyncio.sleep(0)
    sock.close()
    while (srv.conns or srv.pending) and time.monotonic() < deadline:
        now = time.monotonic()
        for c in list(srv.conns):
            if c.task is None and now - max(c.last, start) >= idle_grace and c.shut_if_idle():
                c.transport.close()
        await asyncio.sleep(0.05)
    left: List[_ASGIConnection] = list(srv.conns)
    for c in left:
        if c.task is not None:
            c.task.cancel()
        c.transport.abort()
    await asyncio.sleep(0)
    if use_lifespan:
        await queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(done.get(), max(deadline - time.monotonic(), 1.0))
        except asyncio.TimeoutError:
            pass
    for sig in signals:
        loop.remove_signal_handler(sig)
    return {"cut": len(left), "ms": int((time.monotonic() - start) * 1000)}


def run_asgi(app: ASGIApplication, **kwargs: Any) -> DrainStats:
    """Run serve_asgi(app, **kwargs) in a new asyncio loop (asyncio.run) and
    return its figures."""
    return asyncio.run(serve_asgi(app, **kwargs))
