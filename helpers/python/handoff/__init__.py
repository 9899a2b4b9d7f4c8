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
   idle_grace since the drain began, with nothing received (checked without
   consuming it, in one step with the FIN that closes it);
4. requests in flight have until drain_timeout; then what is left is shut;
5. it returns, and the program exits 0.

The package's modules, one concern each (import from handoff itself: the
modules are not the API): _activation (LISTEN_FDS, listener), _holdback
(the last accepts, and the SYN filter on a socket this process bound),
_sdnotify (READY=1), _httpserver (serve_http), _wsgi (serve_wsgi), _asgi
(serve_asgi, run_asgi), _http11 (the ASGI server's HTTP/1.1 parser), _quiet
(the look and the FIN that close an idle connection, in one step) and
_handover (Handover: connections that move under handoff run --handover).

Standard library only; Python 3.9 and later; typed (py.typed).
"""
from __future__ import annotations

from ._activation import SD_LISTEN_FDS_START, _bound, listen_fds, listener
from ._asgi import _ASGIConnection, _ASGIServer, run_asgi, serve_asgi
from ._handover import Handover
from ._holdback import _SO_ATTACH_FILTER, _SYN_DROP, _hold_back, _take_queued
from ._http11 import _HTTPError, _reason
from ._httpserver import DrainingHTTPServer, DrainStats, _DrainMixin, serve_http
from ._sdnotify import notify
from ._wsgi import _WSGIHandler, serve_wsgi

# The one place the version is written: the build backend (_build.py) reads
# it from here.
__version__ = "0.1.0"

__all__ = ["listen_fds", "listener", "notify", "serve_http", "serve_wsgi", "serve_asgi", "run_asgi", "DrainingHTTPServer", "Handover"]


def __getattr__(name: str) -> object:
    # _passed, the cache of what listen_fds found, lives in _activation now;
    # read here it is that module's current value.
    if name == "_passed":
        from . import _activation
        return _activation._passed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
