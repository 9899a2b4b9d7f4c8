"""sd_notify: a state line to $NOTIFY_SOCKET, as handoff and systemd read it."""
from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send state (such as "READY=1") to $NOTIFY_SOCKET, and report whether
    it was sent: False when not run by handoff or systemd. A socket that is
    named but cannot be reached raises OSError."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True
