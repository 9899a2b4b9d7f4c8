#!/usr/bin/env python3
"""A release that says it is ready and then does not serve. It sends READY=1
to $NOTIFY_SOCKET, then, by its first argument:
  noaccept  never accepts a connection on fd 3;
  hang      accepts every connection and reads the request, and never
            answers (every handler blocks).
SIGTERM ends it at once."""
import os
import select
import socket
import sys
import threading
import time

mode = sys.argv[1]
ln = socket.socket(fileno=3)
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
n.sendto(b"READY=1", addr)


def hold(c):
    c.recv(65536)
    time.sleep(3600)


while True:
    if mode == "noaccept":
        time.sleep(3600)
    # The socket is shared with the serving generation, non-blocking: wait,
    # then take what it left.
    select.select([ln], [], [])
    try:
        c, _ = ln.accept()
    except BlockingIOError:
        continue
    c.setblocking(True)
    threading.Thread(target=hold, args=(c,), daemon=True).start()
