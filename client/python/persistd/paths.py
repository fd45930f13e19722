"""Where things live: the daemon's socket, and whether that place is safe.

No path crosses the socket any more (files travel as descriptors), but the
socket itself is found by path, and gRPC's channel does not let us ask the
kernel who listens on it. So the place is checked instead, as ssh-agent and
systemd's runtime directories rely on: the socket's directory must be ours
(or root's) and closed to everyone else; then nobody else can have put a
socket there.
"""

from __future__ import annotations

import os
import stat

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


def check_private_directory(directory: str) -> None:
    """Refuse a socket directory someone else could write to (mirrors the
    daemon's own check, server/io/unix_socket.cc, which refuses to serve
    there: the client must not trust what the daemon would not create)."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return  # nothing there yet: no daemon to trust or distrust
    uid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid not in (uid, 0):
        problem = "belongs to uid %d, not to you (uid %d) or root" % (info.st_uid, uid)
    elif info.st_mode & 0o077:
        problem = "has mode %04o, open to other users" % stat.S_IMODE(info.st_mode)
    else:
        return
    raise PermissionError(
        "persistd's socket directory %s %s: another user could have put a fake "
        "daemon there, so persistd will not connect. Use a private directory "
        "(mode 0700, yours): set $PERSISTD_SOCKET or $XDG_RUNTIME_DIR, or "
        "`chmod 700 %s` if it is yours" % (directory, problem, directory)
    )
