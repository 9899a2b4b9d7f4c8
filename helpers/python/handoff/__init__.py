"""handoff for Python: take the listening sockets handoff (or systemd) passes,
say READY=1, and drain without losing a request when told to stop.

    import handoff
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive: the helper drains it safely
        def do_GET(self): ...

    handoff.serve_http(Handler, name="web", address=("127.0.0.1", 8080))

serve_http listens on the socket passed as LISTEN_FDS (by its name in
LISTEN_FDNAMES, else the first), or binds address when none was passed; it
serves with a thread per connection, sends READY=1 to $NOTIFY_SOCKET once it
serves, and on SIGTERM or SIGINT drains:

1. it stops accepting, serves what already waits in the accept queue, and
   closes its copy of the listening socket (under handoff the next
   generation accepts; alone, on Linux, it first drops the SYNs of new
   connections, so that none completes only to be reset by the close: their
   clients send them again a second later and are refused);
2. every response from then on carries Connection: close;
3. a keep-alive connection is closed only once it has been idle for
   idle_grace with nothing received (checked without consuming it);
4. requests in flight have until drain_timeout; then what is left is shut;
5. it returns, and the program exits 0.

Standard library only; Python 3.9 and later.
"""
import asyncio
import io
import os
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
import weakref
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["listen_fds", "listener", "notify", "serve_http", "serve_wsgi", "serve_asgi", "run_asgi", "DrainingHTTPServer"]

SD_LISTEN_FDS_START = 3

_passed = None


def listen_fds():
    """Return the sockets passed by handoff or systemd as [(name, socket)], or
    [] when none were passed to this process. LISTEN_PID is checked, and
    LISTEN_* are removed from the environment so that no child takes them.
    Called again, it returns the same sockets."""
    global _passed
    if _passed is not None:
        return _passed
    env = os.environ
    pid, n = env.pop("LISTEN_PID", None), env.pop("LISTEN_FDS", "0")
    names = env.pop("LISTEN_FDNAMES", "").split(":")
    _passed = []
    if pid == str(os.getpid()) and n.isdigit():
        for i in range(int(n)):
            fd = SD_LISTEN_FDS_START + i
            _passed.append((names[i] if i < len(names) else "", socket.socket(fileno=fd)))
    return _passed


def listener(name=None, address=("127.0.0.1", 8080)):
    """Return the listening socket passed under name (or the first passed),
    or, when none was passed, one bound to address. A passed socket is left
    as it came — non-blocking, shared with the other generations."""
    fds = listen_fds()
    if fds:
        if not name:
            return fds[0][1]
        for n, s in fds:
            if n == name:
                return s
        raise LookupError(f"handoff: no socket named {name!r} was passed (passed: {', '.join(n or '?' for n, _ in fds)}) "
                          f"— give --listen {name}=ADDR to handoff run")
    s = socket.create_server(address, reuse_port=False)
    _bound.add(s)
    return s


# The sockets listener() bound itself, by identity: a descriptor's number can
# come back for another socket once the first is closed.
_bound = weakref.WeakSet()

# A classic BPF socket filter that drops the TCP segments that open a
# connection (SYN without ACK) and lets the rest through: the TCP flags are
# byte 13 of the header the filter sees. (code, jt, jf, k) each.
_SYN_DROP = [(0x30, 0, 0, 13), (0x45, 1, 0, 0x10), (0x45, 1, 0, 0x02), (0x06, 0, 0, 0xFFFFFFFF), (0x06, 0, 0, 0)]
_SO_ATTACH_FILTER = 26


def _hold_back(sock):
    """Before a socket that this process alone holds is closed, drop the
    SYNs that open new connections (their clients send them again a second
    later, and are refused by then), so that no connection completes
    in the kernel only to be reset by the close. Reports whether it did: not
    for a passed socket, which the next generation serves on, nor off Linux."""
    if sock not in _bound or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import struct
        prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _SYN_DROP))
        fprog = struct.pack("HL", len(_SYN_DROP), ctypes.addressof(prog))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        return True
    except (OSError, ImportError):
        return False


def _take_queued(sock, take):
    """Accept what waits in sock's accept queue, handing each connection to
    take, until it is empty; when new connections are held back, until it
    has stayed empty for 20 ms (a handshake under way completes meanwhile)."""
    held = _hold_back(sock)
    sock.setblocking(False)
    quiet_since = None
    while True:
        try:
            conn, addr = sock.accept()
        except (BlockingIOError, InterruptedError):
            if not held:
                return
            now = time.monotonic()
            quiet_since = quiet_since or now
            if now - quiet_since >= 0.02:
                return
            time.sleep(0.002)
            continue
        except OSError:
            return
        quiet_since = None
        take(conn, addr)


def notify(state):
    """Send state (such as "READY=1") to $NOTIFY_SOCKET, and report whether
    it was sent: False when not run by handoff or systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


class DrainingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose handlers (see serve_http) drain their
    connections without loss once drain() is called."""

    daemon_threads = False
    block_on_close = True
    idle_grace = 1.0

    def __init__(self, sock, handler_class):
        super().__init__(sock.getsockname()[:2], handler_class, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.draining = False
        self._wake_r, self._wake_w = os.pipe()  # readable once draining
        self._conns = set()
        self._lock = threading.Lock()

    def get_request(self):
        conn, addr = super().get_request()
        conn.setblocking(True)  # accepted sockets inherit nothing; be explicit
        return conn, addr

    def track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def drain(self, deadline):
        """Stop accepting, close idle connections once quiet, and wait for
        the rest until deadline (a time.monotonic() value). Returns how many
        connections were cut at the deadline."""
        self.shutdown()  # serve_forever returns
        self.draining = True
        os.write(self._wake_w, b"x")
        # Take what waits in the accept queue before closing the socket,
        # which would reset those connections (their requests may be sent).
        def take(conn, addr):
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


class _DrainMixin:
    """Handler side of the drain: wait for each request without blocking the
    drain, close an idle connection only when nothing was received for the
    server's idle_grace, and say Connection: close once draining."""

    def handle(self):
        srv, conn = self.server, self.connection
        srv.track(conn, True)
        try:
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
                if srv.draining and time.monotonic() - idle_since >= srv.idle_grace:
                    return  # idle and quiet for the grace: closed on return
                if srv.draining:
                    select.select([conn], [], [], 0.05)
                else:
                    select.select([conn, srv._wake_r], [], [])
        finally:
            srv.track(conn, False)

    def _pending(self):
        """True if request bytes wait (in rfile's buffer or the socket),
        False if none, None at end of stream: a look that consumes nothing
        and never blocks."""
        conn = self.connection
        conn.setblocking(False)
        try:
            if self.rfile.peek(1):  # buffered, or read now without waiting
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

    def end_headers(self):
        if self.server.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()


def serve_http(handler_class, name=None, address=("127.0.0.1", 8080), idle_grace=1.0, drain_timeout=30.0,
               signals=(signal.SIGTERM, signal.SIGINT)):
    """Serve HTTP with handler_class (a BaseHTTPRequestHandler) on the socket
    listener(name, address) returns, say READY=1, and on one of signals
    drain as the module describes; return the drain's figures once done:
    {"cut": connections shut at the deadline, "ms": how long it took}."""
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


class _WSGIHandler(BaseHTTPRequestHandler):
    """Runs a WSGI application for each request, keep-alive where the
    response's length is known."""

    protocol_version = "HTTP/1.1"
    application = None  # set by serve_wsgi

    def _wsgi(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host, port = self.server.server_address[:2]
        environ = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": str(host), "SERVER_PORT": str(port), "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0] if self.client_address else "",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length) if length else "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for k, v in self.headers.items():
            key = "HTTP_" + k.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = v if key not in environ else environ[key] + "," + v
        started = []

        def start_response(status, headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks = []
        result = self.application(environ, start_response)
        try:
            for data in result:
                chunks.append(data)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        payload = b"".join(chunks)
        names = {k.lower() for k, _ in headers}
        for k, v in headers:
            self.send_header(k, v)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _wsgi

    def log_message(self, *args):
        pass


def serve_wsgi(application, name=None, address=("127.0.0.1", 8080), idle_grace=1.0, drain_timeout=30.0,
               signals=(signal.SIGTERM, signal.SIGINT)):
    """serve_http for a WSGI application: each request runs application, and
    its response (collected whole) goes out with its length, so that the
    connection can be kept alive and drained as serve_http does. For
    streaming responses, run the application under a WSGI server of its own."""
    handler = type("WSGIHandler", (_WSGIHandler,), {"application": staticmethod(application)})
    return serve_http(handler, name=name, address=address, idle_grace=idle_grace, drain_timeout=drain_timeout, signals=signals)


# --- asyncio: ASGI ---------------------------------------------------------


class _HTTPError(Exception):
    pass


class _ASGIConnection(asyncio.Protocol):
    """One HTTP/1.1 connection of serve_asgi: requests parsed from what was
    received, each run through the ASGI application in turn; the server's
    drain closes it when idle and quiet for idle_grace."""

    def __init__(self, server):
        self.srv = server
        self.buf = bytearray()
        self.transport = None
        self.task = None  # the request being served
        self.last = time.monotonic()  # when data last came or a response ended
        self.closed = False
        self.eof = False  # the client will send nothing more
        self.received = asyncio.Event()  # data came, or the connection closed
        self.writable = asyncio.Event()
        self.writable.set()

    # asyncio.Protocol

    def connection_made(self, transport):
        self.transport = transport
        self.srv.conns.add(self)

    def data_received(self, data):
        self.buf += data
        self.last = time.monotonic()
        self.received.set()
        if self.task is None:
            self._next()

    def eof_received(self):
        self.eof = True
        self.received.set()
        if self.task is None:
            self.transport.close()
        return True  # a request in flight still gets its answer

    def connection_lost(self, exc):
        self.closed = True
        self.received.set()
        self.writable.set()
        self.srv.conns.discard(self)

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    # requests

    def idle(self):
        """True when no request is under way and nothing was received: not
        in the buffer, nor in the kernel's (a look that consumes nothing)."""
        if self.task is not None or self.buf:
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as s:
                return not s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return True

    def _next(self):
        """Start the next request if the buffer holds a whole one."""
        try:
            req = self._parse()
        except _HTTPError as e:
            body = str(e).encode()
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()
            return
        if req is not None:
            self.task = asyncio.ensure_future(self._serve(*req))

    def _parse(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                raise _HTTPError("request head over 64 KiB")
            return None
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _HTTPError("malformed request line")
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise _HTTPError("malformed header line")
            headers.append((k.strip().lower().encode("latin-1"), v.strip().encode("latin-1")))
        hd = dict(headers)
        pos = end + 4
        if b"chunked" in hd.get(b"transfer-encoding", b"").lower():
            body = bytearray()
            while True:
                nl = self.buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                try:
                    size = int(bytes(self.buf[pos:nl]).split(b";")[0], 16)
                except ValueError:
                    raise _HTTPError("malformed chunk size")
                if size == 0:
                    trailer = self.buf.find(b"\r\n\r\n", nl)
                    if trailer < 0:
                        return None
                    pos = trailer + 4
                    break
                if len(self.buf) < nl + 2 + size + 2:
                    return None
                body += self.buf[nl + 2:nl + 2 + size]
                pos = nl + 2 + size + 2
        else:
            try:
                length = int(hd.get(b"content-length", b"0"))
            except ValueError:
                raise _HTTPError("malformed Content-Length")
            if len(self.buf) < pos + length:
                if hd.get(b"expect", b"").lower() == b"100-continue" and len(self.buf) == pos:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return None
            body = bytes(self.buf[pos:pos + length])
            pos += length
        del self.buf[:pos]
        conn = hd.get(b"connection", b"").lower()
        keep = b"close" not in conn if version == "HTTP/1.1" else b"keep-alive" in conn
        return method, target, version, headers, bytes(body), keep

    async def _serve(self, method, target, version, headers, body, keep):
        path, _, query = target.partition("?")
        sock = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": version[5:],
            "method": method, "scheme": "http", "path": urllib.parse.unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "", "headers": headers,
            "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "state": dict(self.srv.state),
        }
        state = {"started": False, "chunked": False, "done": False, "close": not keep}
        sent_body = [False]

        async def receive():
            if not sent_body[0]:
                sent_body[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            while not self.closed and not state["done"]:
                self.received.clear()
                await self.received.wait()
            return {"type": "http.disconnect"}

        async def send(msg):
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


def _reason(status):
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _ASGIServer:
    def __init__(self, app, sock, idle_grace):
        self.app, self.sock, self.idle_grace = app, sock, idle_grace
        self.conns = set()
        self.draining = False
        self.state = {}

    def _accept(self, loop):
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                print(f"handoff: accept: {e}", file=sys.stderr, flush=True)
                return
            self._take(loop, conn)

    def _take(self, loop, conn):
        conn.setblocking(False)
        asyncio.ensure_future(loop.connect_accepted_socket(lambda: _ASGIConnection(self), conn))

    async def _lifespan(self, kind, queue, done):
        await queue.put({"type": "lifespan." + kind})
        msg = await done.get()
        if msg["type"].endswith(".failed"):
            raise RuntimeError(f"ASGI lifespan {kind} failed: {msg.get('message', '')}")


async def serve_asgi(app, name=None, address=("127.0.0.1", 8080), idle_grace=1.0, drain_timeout=30.0,
                     signals=(signal.SIGTERM, signal.SIGINT)):
    """Serve an ASGI application (HTTP; lifespan events if it handles them)
    over HTTP/1.1 on the socket listener(name, address) returns, in the
    running asyncio loop; say READY=1 once it serves; on one of signals,
    drain as serve_http does; return its figures, {"cut", "ms"}. Request
    bodies are read whole before the application runs; responses stream
    (chunked when their length is not given). WebSocket scopes are not
    served: run such an application under an ASGI server of its own.

    asyncio programs that serve HTTP write their handler as an ASGI callable,
    which needs no framework: async def app(scope, receive, send)."""
    loop = asyncio.get_running_loop()
    sock = listener(name, address)
    sock.setblocking(False)
    srv = _ASGIServer(app, sock, idle_grace)

    # Lifespan: startup before serving, shutdown after the drain, where the
    # application takes part (an application that raises on the lifespan
    # scope does not use it).
    queue, done = asyncio.Queue(), asyncio.Queue()
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
    while srv.conns and time.monotonic() < deadline:
        now = time.monotonic()
        for c in list(srv.conns):
            if c.task is None and now - c.last >= idle_grace and c.idle():
                c.transport.close()
        await asyncio.sleep(0.05)
    left = list(srv.conns)
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


def run_asgi(app, **kwargs):
    """Run serve_asgi(app, **kwargs) in a new asyncio loop (asyncio.run) and
    return its figures."""
    return asyncio.run(serve_asgi(app, **kwargs))
