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
   generation accepts; alone, new connections are refused, not queued to be
   reset at exit);
2. every response from then on carries Connection: close;
3. a keep-alive connection is closed only once it has been idle for
   idle_grace with nothing received (checked without consuming it);
4. requests in flight have until drain_timeout; then what is left is shut;
5. it returns, and the program exits 0.

Standard library only; Python 3.9 and later.
"""
import io
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["listen_fds", "listener", "notify", "serve_http", "serve_wsgi", "DrainingHTTPServer"]

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
    return s


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
        self.socket.setblocking(False)
        while True:
            try:
                conn, addr = self.socket.accept()
            except OSError:
                break  # BlockingIOError: the queue is empty
            conn.setblocking(True)
            self.process_request(conn, addr)
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
