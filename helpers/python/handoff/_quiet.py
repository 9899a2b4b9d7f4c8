"""The one step that closes an idle keep-alive connection: look for a
request waiting on it (consuming nothing) and, only if none does, send the
FIN — with nothing of this process run in between.

A request that reaches the server after the look and before the FIN is
lost: the client reads the FIN, not an answer, and a client does not send
a POST again. With socket.recv and socket.shutdown that gap is wide: each
releases the GIL around its system call, and taking it back waits for
whichever handler thread took it meanwhile (milliseconds on a busy
machine). So on Linux both calls are made through ctypes.PyDLL, which keeps
the GIL across the call: the look and the FIN then lie microseconds apart,
as they do in the Go library. Elsewhere, or without ctypes, the socket
methods are used."""
from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any, Optional, Tuple

_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
_QUIET = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def _libc() -> Optional[Tuple[Any, Any, Any, Any]]:
    """recv and shutdown from the C library, called with the GIL held, a
    one-byte buffer and ctypes.get_errno; None where that cannot be had."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)
        recv, shutdown = libc.recv, libc.shutdown
        recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        recv.restype = ctypes.c_ssize_t
        shutdown.argtypes = (ctypes.c_int, ctypes.c_int)
        shutdown.restype = ctypes.c_int
        return recv, shutdown, ctypes.create_string_buffer(1), ctypes.get_errno
    except (ImportError, OSError, AttributeError):
        return None


_C = _libc()


def shut_if_quiet(fd: int) -> Optional[bool]:
    """Send the FIN on the connected socket fd (shutdown SHUT_WR) if no
    byte waits to be read on it, and say what happened: True if shut (the
    caller closes it), False if a request waits (nothing was done: serve
    it), None if the connection is broken (reset: close it, nothing is
    lost). A peer that has closed its side is shut too. The socket's
    blocking mode is left as it was."""
    if fd < 0:
        return None
    if _C is not None:
        recv, shutdown, buf, get_errno = _C
        n = recv(fd, buf, 1, _FLAGS)
        if n > 0:
            return False
        if n < 0 and get_errno() not in _QUIET:
            return None
        return shutdown(fd, socket.SHUT_WR) == 0 or None
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:  # closing the copy leaves fd open
            try:
                if sock.recv(1, _FLAGS):
                    return False
            except (BlockingIOError, InterruptedError):
                pass
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        return None
    return True
