"""The descriptor channel: how files reach the daemon without their paths.

gRPC cannot carry file descriptors, so the daemon listens on a second Unix
socket beside its gRPC one (``<socket>.fds``). This process connects once,
asks the kernel who is at the other end (``SO_PEERCRED``: the daemon must be
our own user or root, or we refuse to hand it anything), and then, before
each call that needs files, sends one message: a random 16-byte token with
the descriptors attached (``SCM_RIGHTS``). The gRPC request names the token.

Why descriptors and not paths: the client opens the file it loads and
creates the file it dumps with its own credentials, umask and symlink
semantics, so the daemon never acts on a path for anyone (no confused
deputy, no FIFO that hangs it, no mode wider than the caller's), and the
daemon reads exactly the file the client will map.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Sequence

#: The daemon reads tokens of exactly this size (server/io/fd_passing.h).
TOKEN_BYTES = 16

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel saw it
    when the connection was made."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class DescriptorChannel:
    """One verified connection to the daemon's descriptor socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            pid, uid, _ = peer_credentials(sock)
            if uid not in (os.geteuid(), 0):
                raise PermissionError(
                    "the process serving %s (pid %d) runs as uid %d, not as you "
                    "(uid %d) or root: it is not your persistd, so nothing is sent "
                    "to it; stop it, or point $PERSISTD_SOCKET at your own daemon"
                    % (path, pid, uid, os.geteuid())
                )
        except BaseException:
            sock.close()
            raise
        self.daemon_pid = pid
        self._sock = sock

    def send(self, fds: Sequence[int]) -> bytes:
        """Hands ``fds`` to the daemon; returns the token naming them."""
        token = os.urandom(TOKEN_BYTES)
        with self._lock:
            socket.send_fds(self._sock, [token], list(fds))
        return token

    def close(self) -> None:
        self._sock.close()
