#!/usr/bin/env python3
"""A release of an app for the releases-on-one-host test: it takes its socket
from fd 3 (no READY=1: run with --ready accept) and answers each request with
its pid, the directory it runs in (the release), $COLOR, and how many SIGUSR1
it has had."""
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

usr1 = 0


def on_usr1(*_):
    global usr1
    usr1 += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = ("pid=%d release=%s color=%s usr1=%d\n" % (
            os.getpid(), os.path.basename(os.getcwd()), os.environ.get("COLOR", ""), usr1)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


signal.signal(signal.SIGUSR1, on_usr1)
srv = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
srv.serve_forever()
