"""The last accepts before a listening socket closes, and, on a socket this
process alone holds (Linux), a socket filter that drops the SYNs of new
connections first, so that none completes in the kernel only to be reset by
the close."""
from __future__ import annotations

import socket
import sys
import time
from typing import Any, Callable

from ._activation import _bound

# A classic BPF socket filter that drops the TCP segments that open a
# connection (SYN without ACK) and lets the rest through: the TCP flags are
# byte 13 of the header the filter sees. (code, jt, jf, k) each.
_SYN_DROP = [(0x30, 0, 0, 13), (0x45, 1, 0, 0x10), (0x45, 1, 0, 0x02), (0x06, 0, 0, 0xFFFFFFFF), (0x06, 0, 0, 0)]
_SO_ATTACH_FILTER = 26


def _hold_back(sock: socket.socket) -> bool:
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


def _take_queued(sock: socket.socket, take: Callable[[socket.socket, Any], object]) -> None:
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
