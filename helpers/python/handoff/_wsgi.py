"""serve_wsgi: a WSGI application served by serve_http, each response
collected whole and sent with its length, so that keep-alive drains."""
from __future__ import annotations

import io
import signal
import sys
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type, cast

from ._httpserver import _STOP_SIGNALS, DrainStats, serve_http

_ExcInfo = Tuple[Type[BaseException], BaseException, Optional[TracebackType]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApplication = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]


class _WSGIHandler(BaseHTTPRequestHandler):
    """Runs a WSGI application for each request, keep-alive where the
    response's length is known."""

    protocol_version = "HTTP/1.1"
    application: Optional[WSGIApplication] = None  # set by serve_wsgi

    def _wsgi(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host, port = cast(Tuple[str, int], self.server.server_address)[:2]
        environ: Dict[str, Any] = {
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
        started: List[Any] = []
        chunks: List[bytes] = []

        def start_response(status: str, headers: List[Tuple[str, str]],
                           exc_info: Optional[_ExcInfo] = None) -> Callable[[bytes], object]:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        assert self.application is not None
        result = self.application(environ, start_response)
        try:
            for data in result:
                chunks.append(data)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
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

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_wsgi(application: WSGIApplication, name: Optional[str] = None,
               address: Tuple[str, int] = ("127.0.0.1", 8080), idle_grace: float = 1.0, drain_timeout: float = 30.0,
               signals: Iterable[signal.Signals] = _STOP_SIGNALS) -> DrainStats:
    """serve_http for a WSGI application: each request runs application, and
    its response (collected whole) goes out with its length, so that the
    connection can be kept alive and drained as serve_http does. For
    streaming responses, run the application under a WSGI server of its own."""
    handler = type("WSGIHandler", (_WSGIHandler,), {"application": staticmethod(application)})
    return serve_http(handler, name=name, address=address, idle_grace=idle_grace, drain_timeout=drain_timeout, signals=signals)
