"""Starting the daemon on demand, and reconnecting to it, as users meet them.

Each test gets its own socket directory with no daemon in it; whatever
daemon a test starts there is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon, daemon_binary, status
from persistd import dump, load, paths


@pytest.fixture
def own_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """$PERSISTD_SOCKET in a new private directory, autostart on with the
    daemon under test; any daemon left there is stopped at the end."""
    directory = tempfile.mkdtemp(prefix="pd")  # short: socket paths are limited
    socket = os.path.join(directory, "persistd.sock")
    monkeypatch.setenv("PERSISTD_SOCKET", socket)
    monkeypatch.setenv("PERSISTD_BIN", daemon_binary())
    monkeypatch.delenv("PERSISTD_STORE", raising=False)
    monkeypatch.delenv("PERSISTD_AUTOSTART", raising=False)
    try:
        yield socket
    finally:
        stop_daemon_at(socket)
        shutil.rmtree(directory, ignore_errors=True)


def stop_daemon_at(socket: str) -> None:
    reply = status(socket, timeout=0.5)
    if reply is None:
        return
    os.kill(reply.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive(reply.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie: the daemon may be our child)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def log_of(socket: str) -> str:
    """The log of the daemon started for ``socket``: in its store."""
    store = paths.store_for_socket(socket)
    assert store is not None
    with open(os.path.join(store, "persistd.log")) as f:
        return f.read()


def test_started_daemon_gets_a_store_beside_its_socket(own_socket: str, tmp_path: Path) -> None:
    dump({"a": np.arange(3)}, tmp_path / "v.pkl", compress=1)
    np.testing.assert_array_equal(load(tmp_path / "v.pkl")["a"], np.arange(3))
    reply = status(own_socket)
    assert reply is not None
    # Never the default store (~/.local/share/persistd): one store per socket.
    assert reply.store_dir == os.path.join(os.path.dirname(own_socket), "persistd.store")
    assert os.path.isdir(os.path.join(reply.store_dir, "segments"))


def test_failed_start_reports_the_daemons_own_message_at_once(
    own_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTD_CACHE_BYTES", "lots")
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        dump(1, tmp_path / "v.pkl")
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "exited with status 2 while starting" in message
    assert "PERSISTD_CACHE_BYTES='lots' is not a size" in message  # the daemon's words
    assert elapsed < 2.0, elapsed
    assert not (tmp_path / "v.pkl").exists()


def test_a_store_that_cannot_be_used_is_reported_too(own_socket: str, tmp_path: Path) -> None:
    Path(os.path.dirname(own_socket), "persistd.store").write_text("not a directory")
    with pytest.raises(ConnectionError, match="persistd.store exists and is not a directory"):
        load(__file__)


def test_autostart_can_be_turned_off(
    own_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTD_AUTOSTART", "0")
    with pytest.raises(ConnectionError, match="autostart is off"):
        dump(1, tmp_path / "v.pkl")
    assert not os.path.exists(own_socket)
    monkeypatch.setenv("PERSISTD_AUTOSTART", "sometimes")
    with pytest.raises(ValueError, match="PERSISTD_AUTOSTART='sometimes' is not 0 or 1"):
        dump(1, tmp_path / "v.pkl")
    monkeypatch.setenv("PERSISTD_AUTOSTART", "1")
    dump(1, tmp_path / "v.pkl")
    assert load(tmp_path / "v.pkl") == 1


def test_missing_binary_says_how_to_get_one(
    own_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSISTD_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))  # no persistd there
    with pytest.raises(ConnectionError) as info:
        dump(1, tmp_path / "v.pkl")
    message = str(info.value)
    assert "persistd is not running at %s" % own_socket in message
    assert "pip install persistd-" in message and "PERSISTD_BIN=" in message
    monkeypatch.setenv("PERSISTD_BIN", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="PERSISTD_BIN=.*nothing is not an executable"):
        dump(1, tmp_path / "v.pkl")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_next_call_after_a_restart_reconnects_at_once(
    fresh_daemon: Daemon, tmp_path: Path, how: signal.Signals
) -> None:
    target = tmp_path / "v.pkl"
    value = {"a": np.arange(100_000.0)}
    dump(value, target, compress=3)
    held = load(target)  # a session with a lease: an open Attach stream
    started = time.monotonic()
    fresh_daemon.stop(how)
    stop_seconds = time.monotonic() - started
    fresh_daemon.start()
    started = time.monotonic()
    again = load(target)
    reconnect_seconds = time.monotonic() - started
    np.testing.assert_array_equal(again["a"], value["a"])
    np.testing.assert_array_equal(held["a"], value["a"])
    # Attach streams used to hold SIGTERM's shutdown for its 5 s grace period.
    assert stop_seconds < 1.0, stop_seconds
    assert reconnect_seconds < 0.5, reconnect_seconds


def test_a_stopped_daemon_is_replaced_at_once(own_socket: str, tmp_path: Path) -> None:
    dump(np.arange(10), tmp_path / "v.pkl")
    load(tmp_path / "v.pkl")
    first = status(own_socket)
    assert first is not None
    stop_daemon_at(own_socket)
    started = time.monotonic()
    np.testing.assert_array_equal(load(tmp_path / "v.pkl"), np.arange(10))
    elapsed = time.monotonic() - started
    second = status(own_socket)
    assert second is not None and second.pid != first.pid
    assert elapsed < 2.0, elapsed


_WORKER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from persistd import dump, load
    from persistd.client import default_client
    go = sys.argv[1]
    open(go + sys.argv[3], "w").close()  # ready
    while not os.path.exists(go):
        time.sleep(0.001)
    name = os.path.join(sys.argv[2], "w%s.pkl" % sys.argv[3])
    dump({"i": np.full(1000, int(sys.argv[3]))}, name, compress=3)
    assert int(load(name)["i"][0]) == int(sys.argv[3])
    print(default_client().status()["pid"])
    """
)


def test_concurrent_first_calls_start_exactly_one_daemon(own_socket: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(go), str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    deadline = time.monotonic() + 60
    while not all(Path(str(go) + str(i)).exists() for i in range(8)):  # imported, at the gate
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    pids = set()
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        pids.add(int(out.strip()))
    assert len(pids) == 1, pids
    log = log_of(own_socket)
    assert log.count(": serving ") == 1, log
