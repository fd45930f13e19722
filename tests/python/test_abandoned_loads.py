"""An abandoned load stops its segment build (issue #8, "Cancellation").

The first load of a compressed file builds its segment, which can take
tens of seconds. When the client that asked for it is killed, or its call
times out, and nobody else waits for that build, the daemon stops it: it
goes idle, keeps no segment, and the next load builds again. While another
client waits for the same build, the build goes on for it.

The source is random bytes in bz2 at level 9, whose build takes about 10 s
of the daemon's CPU on a quiet machine: far longer than the 5 s these
tests give the daemon to go idle, so a build that kept going fails them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import persistd
from conftest import Daemon, assert_goes_idle, daemon_binary
from persistd import admin

SEED = 20261129
N_BYTES = 150_000_000


def _values() -> np.ndarray:
    return np.random.default_rng(SEED).integers(0, 256, size=N_BYTES, dtype=np.uint8)


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The slow-to-build file, dumped once through a daemon whose cache is
    too small to warm it (so no daemon spends its CPU building it now)."""
    path = tmp_path_factory.mktemp("abandoned") / "slow.pkl"
    writer = Daemon(daemon_binary(), cache_bytes=64 << 20)
    writer.start()
    try:
        with persistd.Client(writer.socket, autostart=False) as client:
            client.dump(_values(), str(path), compress=("bz2", 9))
    finally:
        writer.cleanup()
    yield path


def _await_build(daemon: Daemon, path: Path) -> None:
    """Returns once the daemon lists a build of `path` under way."""
    deadline = time.monotonic() + 30.0
    while not any(b["source_path"] == str(path) for b in admin.status(daemon.socket)["builds"]):
        assert time.monotonic() < deadline, "no build of %s started" % path
        time.sleep(0.02)


def _await_loads(daemon: Daemon, n: int) -> None:
    """Returns once the daemon has taken `n` loads (waiting ones count)."""
    deadline = time.monotonic() + 30.0
    while admin.status(daemon.socket)["loads"] < n:
        assert time.monotonic() < deadline, "the daemon took fewer than %d loads" % n
        time.sleep(0.02)


LOADER = (
    "import sys, numpy as np\n"
    "from persistd import load\n"
    "value = load(sys.argv[1])\n"
    "expected = np.random.default_rng(int(sys.argv[2])).integers(0, 256, size=int(sys.argv[3]), dtype=np.uint8)\n"
    "print('equal' if np.array_equal(value, expected) else 'different', flush=True)\n"
)


def _start_loader(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, str(path), str(SEED), str(N_BYTES)], stdout=subprocess.PIPE
    )


def _segments_of(daemon: Daemon, path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [s for s in admin.list_segments(daemon.socket) if s["source_path"] == str(path)]


def test_a_killed_first_load_stops_its_build(fresh_daemon: Daemon, slow_file: Path) -> None:
    child = _start_loader(slow_file)
    try:
        _await_build(fresh_daemon, slow_file)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert_goes_idle(fresh_daemon, what="building for nobody")
    assert admin.status(fresh_daemon.socket)["builds"] == []
    assert _segments_of(fresh_daemon, slow_file) == []
    assert os.listdir(os.path.join(fresh_daemon.store, "segments")) == []
    # The stopped build is not a failure shared with later loads.
    loaded = persistd.load(slow_file)
    np.testing.assert_array_equal(loaded, _values())
    assert len(_segments_of(fresh_daemon, slow_file)) == 1


def test_a_build_goes_on_for_a_client_still_waiting(fresh_daemon: Daemon, slow_file: Path) -> None:
    first = _start_loader(slow_file)
    second: subprocess.Popen[bytes] | None = None
    try:
        _await_build(fresh_daemon, slow_file)
        second = _start_loader(slow_file)
        _await_loads(fresh_daemon, 2)  # the second waits for the first's build
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second is not None
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    assert out.strip() == b"equal"
    # It was the first build that went on, not a second one.
    segments = _segments_of(fresh_daemon, slow_file)
    assert [s["generation"] for s in segments] == [1]


def test_a_load_that_times_out_stops_its_build(fresh_daemon: Daemon, slow_file: Path) -> None:
    with persistd.Client(fresh_daemon.socket, timeout=1.0, autostart=False) as client:
        with pytest.raises(TimeoutError):
            client.load(slow_file)
    assert_goes_idle(fresh_daemon, what="building for nobody")
    assert _segments_of(fresh_daemon, slow_file) == []
    assert os.listdir(os.path.join(fresh_daemon.store, "segments")) == []
