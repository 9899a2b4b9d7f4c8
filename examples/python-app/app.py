#!/usr/bin/env python3
"""What a Python program needs to run under 'handoff run' (or a systemd
.socket unit), with the standard library only: take the socket from fd 3
(LISTEN_FDS), send READY=1, and on SIGTERM finish what it serves, then exit.

    handoff run --listen web=127.0.0.1:8080 -- python3 examples/python-app/app.py
"""
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SD_LISTEN_FDS_START = 3


def listen_fds():
    """The sockets passed by handoff or systemd, as socket objects."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    n = int(os.environ.get("LISTEN_FDS", "0"))
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # no child of ours may take them
    return [socket.socket(fileno=fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n)]


def sd_notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so that stopping never races a
    # client about to reuse an idle keep-alive connection.
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.path.startswith("/slow"):
            d = parse_qs(urlparse(self.path).query).get("d", ["0s"])[0]
            time.sleep(min(float(d.rstrip("s") or 0), 60))
        body = f"pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def main():
    print(f"app: pid={os.getpid()} LISTEN_PID={os.environ.get('LISTEN_PID')} "
          f"LISTEN_FDNAMES={os.environ.get('LISTEN_FDNAMES')}", flush=True)
    socks = listen_fds()
    if not socks:
        sys.exit("app: no socket passed — run me under 'handoff run --listen ADDR' or a .socket unit")
    server = ThreadingHTTPServer(socks[0].getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socks[0]
    # Leave the socket as it came (non-blocking): every generation shares it,
    # with its O_NONBLOCK flag, and a Go generation blocked in accept(2)
    # could not be stopped. socketserver waits in select() and skips an
    # accept that another generation won (BlockingIOError).
    server.daemon_threads = False  # server_close waits for requests in flight

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    # Python runs signal handlers in the main thread only, and a stop signal
    # the kernel delivers to another thread does not wake stopping.wait():
    # the serving thread, and the request threads it starts, inherit a mask
    # that blocks the stop signals, so that they reach the main thread.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    sd_notify("READY=1")

    while not stopping.wait(0.5):
        pass
    server.shutdown()      # stop accepting; the next generation accepts the rest
    server.server_close()  # wait for the requests in flight
    print(f"app: pid={os.getpid()} drained", flush=True)


if __name__ == "__main__":
    main()
