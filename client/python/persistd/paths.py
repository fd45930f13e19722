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
from dataclasses import dataclass

#: Environment variable naming the daemon's socket.
SOCKET_ENV = "PERSISTD_SOCKET"
#: Environment variable naming the daemon binary the client may start.
BIN_ENV = "PERSISTD_BIN"
#: Environment variable naming the daemon's store (read by the daemon too).
STORE_ENV = "PERSISTD_STORE"
#: Environment variable: 0 to never start a daemon, 1 (the default) to start
#: one when none answers.
AUTOSTART_ENV = "PERSISTD_AUTOSTART"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Which daemon a client talks to and whether it may start one.

    The one place where the environment is read for the client: a
    ``persistd.Client`` resolves the arguments it was not given here, and
    the module-level ``dump``/``load`` use a client made from
    ``Settings.resolve()`` (remade when the environment changes).
    """

    #: The daemon's socket; its directory must be private (0700, ours).
    socket: str
    #: Start a daemon on ``socket`` when none answers.
    autostart: bool

    @classmethod
    def resolve(cls, socket: str | os.PathLike[str] | None = None,
                autostart: bool | None = None) -> Settings:
        """The given values, the environment's where one is None
        (``$PERSISTD_SOCKET`` etc., see ``socket_path`` and
        ``autostart_enabled``)."""
        return cls(
            socket=os.fspath(socket) if socket is not None else socket_path(),
            autostart=autostart_enabled() if autostart is None else bool(autostart),
        )


def socket_path() -> str:
    """The socket the daemon listens on, with the daemon's own defaults:
    $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock, else
    /tmp/persistd-<uid>/persistd.sock."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    return default_socket_path()


def default_socket_path() -> str:
    """The socket when $PERSISTD_SOCKET is not set (the systemd unit's)."""
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


def store_for_socket(socket: str) -> str | None:
    """The ``--store`` for a daemon this client starts on ``socket``, or
    None to leave the daemon its default.

    The default socket gets the daemon's default store ($PERSISTD_STORE, else
    ~/.local/share/persistd), the one the systemd unit uses too. Any other
    socket gets a store beside it (``<dir>/<name>.store``, e.g.
    ``/tmp/x/persistd.store`` for ``/tmp/x/persistd.sock``): one store per
    socket, because a store serves one daemon only; two sockets sharing the
    default store would make the second daemon refuse to start.
    $PERSISTD_STORE, when set, wins (the daemon reads it itself).
    """
    if os.environ.get(STORE_ENV):
        return None
    if os.path.abspath(socket) == os.path.abspath(default_socket_path()):
        return None
    stem, ext = os.path.splitext(os.path.basename(socket))
    name = (stem if ext == ".sock" else os.path.basename(socket)) + ".store"
    return os.path.join(os.path.dirname(os.path.abspath(socket)), name)


def autostart_enabled() -> bool:
    """$PERSISTD_AUTOSTART: whether the client starts a daemon when none
    answers. On by default: someone who writes ``from persistd import
    dump`` expects dump to work, as joblib's does, without learning first
    that a daemon exists. Set it to 0 where a supervisor (systemd) owns the
    daemon, so that a stopped daemon shows up as an error instead of being
    replaced by one with another configuration."""
    value = os.environ.get(AUTOSTART_ENV, "").strip().lower()
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        "%s=%r is not 0 or 1: set it to 1 (start a daemon when none answers, "
        "the default) or 0 (never), or unset it" % (AUTOSTART_ENV, os.environ[AUTOSTART_ENV])
    )
