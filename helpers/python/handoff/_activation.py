"""Socket activation: the listening sockets handoff or systemd pass
(LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), or one bound here when none was."""
from __future__ import annotations

import os
import socket
import weakref
from typing import List, Optional, Tuple

SD_LISTEN_FDS_START = 3

# What listen_fds found, once it has looked: the environment is read once.
_passed: Optional[List[Tuple[str, socket.socket]]] = None

# The sockets listener() bound itself, by identity: a descriptor's number can
# come back for another socket once the first is closed.
_bound: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()


def listen_fds() -> List[Tuple[str, socket.socket]]:
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


def listener(name: Optional[str] = None, address: Tuple[str, int] = ("127.0.0.1", 8080)) -> socket.socket:
    """Return the listening socket passed under name (or the first passed),
    or, when none was passed, one bound to address. A passed socket is left
    as it came — non-blocking, shared with the other generations.

    Raises LookupError when sockets were passed but none is named name."""
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
