"""Starting a daemon when none answers (``$PERSISTD_AUTOSTART``, default on).

Why on by default: ``from persistd import dump, load`` replaces joblib's
functions, which need no server; a user who imports persistd expects dump
and load to work. So the first call of a process that finds no daemon starts
one, detached (its own session: Ctrl-C in the user's terminal does not stop
it), and every later process uses it. Set ``PERSISTD_AUTOSTART=0`` where a
supervisor owns the daemon (systemd: ``deploy/persistd.service``).

What the started daemon gets:

- ``--socket``: the socket the client was looking for;
- ``--store``: derived from the socket (``paths.store_for_socket``), so a
  client pointed at another socket never collides with the default store;
- no log file of ours: the daemon logs where it always does,
  ``<store>/persistd.log`` (``persistd --help``, ``persistctl status``),
  so there is one place to look however it was started. Until it serves,
  it also writes its errors to stderr, which we keep in an unnamed file:
  if it exits while starting, the caller gets its own message at once
  (not after a timeout).

Many processes may find no daemon at the same moment (a worker pool
starting): an exclusive ``flock`` beside the socket lets one start it while
the others wait and then find it answering. Exactly one daemon results.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO

from persistd import binary, paths

#: How long a started daemon may take to answer.
START_TIMEOUT_S = 10.0
#: How often the starter looks at the new daemon while it starts.
_POLL_S = 0.01
#: How much of the daemon's stderr a failure report quotes.
_STDERR_TAIL_BYTES = 4000

#: Daemons this process started and that may still run. They are our
#: children: kept (Popen would warn if collected while they run) and reaped
#: once they exit (at the next start), so they leave no zombie behind.
_started: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _started[:] = [process for process in _started if process.poll() is None]


@atexit.register
def _let_go() -> None:
    """At exit: reap the daemons that ended; the others outlive us by
    design (Popen would call them leaks: "subprocess N is still running")."""
    _reap()
    for process in _started:
        process.returncode = 0  # not ours to wait for any more


class DaemonStartError(ConnectionError):
    """The daemon this client started exited or did not answer."""


def ensure_running(socket: str, probe: Callable[[float], bool], *, allowed: bool) -> None:
    """Return once a daemon answers on ``socket``, starting one if
    ``allowed`` (the client's ``autostart``, see ``paths.Settings``).

    ``probe(timeout)`` is True when a daemon answers there (and raises if it
    speaks another protocol).
    """
    if not allowed:
        raise ConnectionError(
            "persistd is not running at {0}, and autostart is off ({1}=0 or "
            "Client(autostart=False)): start it (`persistd --socket {0}`, or "
            "`systemctl --user start persistd`), or unset {1}".format(
                socket, paths.AUTOSTART_ENV)
        )
    daemon = binary.find_binary()
    if daemon is None:
        raise ConnectionError(
            "persistd is not running at %s and there is no daemon binary to start: %s"
            % (socket, binary.HOW_TO_GET_ONE)
        )
    _reap()
    directory = os.path.dirname(os.path.abspath(socket))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths.check_private_directory(directory)
    with _start_lock(directory):
        if probe(0.5):
            return  # another process started it while we waited for the lock
        _start(daemon, socket, probe)


@contextlib.contextmanager
def _start_lock(directory: str) -> Iterator[None]:
    """Serializes starters of one socket (held until the daemon answers)."""
    fd = os.open(
        os.path.join(directory, "persistd.start.lock"),
        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def command(daemon: str, socket: str) -> list[str]:
    """The command line of a daemon started for ``socket``."""
    args = [daemon, "--socket", socket]
    store = paths.store_for_socket(socket)
    if store is not None:
        args += ["--store", store]
    return args


def _start(daemon: str, socket: str, probe: Callable[[float], bool]) -> None:
    args = command(daemon, socket)
    # Unnamed (O_TMPFILE where the filesystem has it): nothing to clean up,
    # and the daemon writes nothing to stderr once it serves.
    with tempfile.TemporaryFile(prefix="persistd-start-") as stderr:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
        _started.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = process.poll()
            if code is not None:
                raise DaemonStartError(
                    "persistd exited with status %d while starting (`%s`): %s"
                    % (code, " ".join(args), _explain(_tail(stderr)))
                )
            if os.path.exists(socket) and probe(0.25):
                return
            if time.monotonic() > deadline:
                raise DaemonStartError(
                    "persistd (`%s`, pid %d) did not answer within %.0f s; it said: %s "
                    "(more in its log, <store>/persistd.log)"
                    % (" ".join(args), process.pid, START_TIMEOUT_S,
                       _tail(stderr) or "nothing")
                )
            time.sleep(_POLL_S)


def _tail(stderr: IO[bytes]) -> str:
    """The last lines the daemon wrote to ``stderr``."""
    size = stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, size - _STDERR_TAIL_BYTES))
    return stderr.read().decode(errors="replace").strip()


def _explain(message: str) -> str:
    """The daemon's message, plus what to do where it cannot say itself."""
    if "error while loading shared libraries" in message:
        message += (
            " (the packaged daemon is built on Debian 12 and links its system "
            "libraries: `apt-get install libgrpc++1.51 libabsl20220623 "
            "libprotobuf32 liblz4-1 libzstd1 libbz2-1.0 liblzma5 libisal2 "
            "libspdlog1.10 libfmt9`, or "
            "build persistd on this machine and set PERSISTD_BIN)"
        )
    return message or "it wrote nothing"
