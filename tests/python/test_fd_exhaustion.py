"""The daemon at its descriptor limit (hardening, item 3).

With RLIMIT_NOFILE reached, accept() fails with EMFILE but leaves the
connection in the backlog, so the listener used to spin at 100% CPU and log
a line per turn. Now it sheds pending connections with a reserve descriptor,
backs off, and rate-limits the log; once connections close it serves again.
The daemon is started with a low limit (preexec_fn) and flooded with plain
socket connections from this process.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import cpu_seconds, daemon_binary, serving
from hostile import ConfiguredDaemon, array_wrapper
from persistd import load

NOFILE = 48  # an idle daemon holds about 15
CLIENTS = 150  # more than the limit and the backlog (128) together


def _low_limit() -> None:
    """Runs in the daemon's child process before exec."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def low_limit_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfiguredDaemon]:
    """A daemon whose process starts with RLIMIT_NOFILE = NOFILE."""
    with serving(ConfiguredDaemon(daemon_binary(), preexec_fn=_low_limit), monkeypatch) as instance:
        yield instance


def test_descriptor_exhaustion_costs_little_cpu_and_log_and_passes(
    low_limit_daemon: ConfiguredDaemon, tmp_path: Path
) -> None:
    """CPU time and log growth stay small while connections pile up at the
    descriptor limit (they were a core and megabytes a second), and the
    daemon serves again once they are gone."""
    daemon = low_limit_daemon
    assert daemon.process is not None
    pid = daemon.process.pid
    good = tmp_path / "good.pkl"
    good.write_bytes(array_wrapper((3,), "f8", np.arange(3.0).tobytes()))
    np.testing.assert_array_equal(load(good), np.arange(3.0))

    clients: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(daemon.socket)
            except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
                pass  # backlog full: it still counts as pressure
            clients.append(s)
        time.sleep(0.5)  # the daemon reaches its limit
        log_before = os.path.getsize(daemon.log_path)
        cpu_before = cpu_seconds(pid)
        time.sleep(3.0)
        # Keep knocking while at the limit: new connections are shed.
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(daemon.socket)
            except OSError:
                pass
            clients.append(s)
            time.sleep(0.05)
        cpu_used = cpu_seconds(pid) - cpu_before
        log_growth = os.path.getsize(daemon.log_path) - log_before
        print("daemon CPU over 4 s at its descriptor limit: %.3f s; log grew %d bytes" % (cpu_used, log_growth))
        assert cpu_used < 0.4, "the listener spins at the descriptor limit"
        assert log_growth < 4096, daemon.log()[-1000:]
        assert "descriptor limit" in daemon.log()
    finally:
        for s in clients:
            s.close()

    # Connections closed: the daemon serves again.
    deadline = time.monotonic() + 15
    while True:
        try:
            np.testing.assert_array_equal(load(good), np.arange(3.0))
            break
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert daemon.process.poll() is None
