#!/usr/bin/env python3
"""A server that serves, then hangs on a signal: for the liveness checks of a
serving generation. It takes its socket from fd 3 (no READY=1: run with
--ready accept), answers each request with its pid, one thread per
connection. After SIGUSR1 it goes on accepting connections and reading their
requests, and never answers another (every handler blocks: a deadlock, a
stuck dependency). URL /slow?d=SECONDS answers after that long (a busy
server, not a hung one); /poll holds its request until SIGTERM (long
polling). On SIGTERM it stops accepting, and exits once its last answerable
request is answered."""
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

hung = threading.Event()
never = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if hung.is_set():
            never.wait()
        u = urlparse(self.path)
        if u.path == "/slow":
            d = parse_qs(u.query).get("d", ["1s"])[0]
            time.sleep(float(d[:-2]) / 1000 if d.endswith("ms") else float(d.rstrip("s")))
        elif u.path == "/poll":
            never.wait()
        body = ("pid=%d\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


signal.signal(signal.SIGUSR1, lambda *a: hung.set())
srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
srv.serve_forever()
