"""Where things live: the daemon's socket, and the paths sent to it.

The daemon resolves nothing relative to the client: it runs with its own cwd,
so every path the client sends is made absolute in the caller's cwd first.
"""

from __future__ import annotations

import os

#: Environment variable naming the daemon's socket.
SOCKET_ENV = "PERSISTD_SOCKET"
#: Environment variable naming the daemon binary the client may start.
BIN_ENV = "PERSISTD_BIN"


def socket_path() -> str:
    """The socket the daemon listens on, with the daemon's own defaults:
    $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock, else
    /tmp/persistd-<uid>/persistd.sock."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "persistd.sock")
    return os.path.join("/tmp", "persistd-%d" % os.getuid(), "persistd.sock")


def absolute(path: str) -> str:
    """``path`` made absolute in the caller's cwd (the daemon has its own)."""
    return os.path.abspath(path)
