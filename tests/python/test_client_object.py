"""``persistd.Client``: a daemon chosen by argument, not by the environment;
its timeout, autostart switch, close and context manager; two clients on two
daemons at once; fork; and the public type hints as a type checker sees them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import persistd
from conftest import Daemon, daemon_binary, running


@pytest.fixture
def other_daemon() -> Iterator[Daemon]:
    """A daemon the environment does not name: only a Client reaches it."""
    with running(Daemon(daemon_binary())) as instance:
        yield instance


def _list_segments(socket: str) -> list[dict[str, Any]]:
    from persistd import admin

    return admin.list_segments(socket)


def test_client_talks_to_its_own_daemon(other_daemon: Daemon, daemon: Daemon, tmp_path: Path) -> None:
    value = {"w": np.arange(300000, dtype="f8").reshape(300, 1000), "name": "m"}
    target = tmp_path / "m.pkl"
    with persistd.Client(Path(other_daemon.socket)) as client:
        assert client.socket == other_daemon.socket
        assert client.dump(value, target, compress=("zlib", 3)) == str(target)
        back = client.load(target, mmap_mode="r")
        np.testing.assert_array_equal(back["w"], value["w"])
        # The array maps a segment of that daemon's store, not the default's.
        assert back["w"].filename.startswith(other_daemon.store)
        assert client.status()["pid"] == other_daemon.process.pid  # type: ignore[union-attr]
    assert not _list_segments(daemon.socket) or all(
        s["source_path"] != str(target) for s in _list_segments(daemon.socket)
    )
    # A real joblib file.
    np.testing.assert_array_equal(joblib.load(target)["w"], value["w"])
    # The module-level functions still use the environment's daemon.
    assert persistd.load(target)["name"] == "m"
    assert any(s["source_path"] == str(target) for s in _list_segments(daemon.socket))


def test_leases_are_released_through_the_client_that_took_them(tmp_path: Path) -> None:
    """Two clients, two daemons: each daemon sees its leases end when the
    arrays go, whichever client makes the next call."""
    daemons = [Daemon(daemon_binary()), Daemon(daemon_binary())]
    try:
        for d in daemons:
            d.start()
        clients = [persistd.Client(d.socket) for d in daemons]
        path = str(tmp_path / "v.pkl")
        persistd.dump({"a": np.ones(500000)}, path, compress="lz4")
        arrays = [c.load(path)["a"] for c in clients]
        assert [persistd.Client(d.socket).status()["leased_segments"] for d in daemons] == [1, 1]
        del arrays
        gc.collect()
        # The second client's next call must not swallow the first one's release.
        clients[1].load(path, mmap_mode="r")
        clients[0].load(path, mmap_mode="r")
        gc.collect()
        clients[1].dump(0, path + ".x")
        clients[0].dump(0, path + ".x")
        assert [c.status()["leased_segments"] for c in clients] == [0, 0]
        for c in clients:
            c.close()
    finally:
        for d in daemons:
            d.cleanup()


def test_autostart_false_never_starts_a_daemon(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(prefix="pdc")
    try:
        socket = os.path.join(directory, "persistd.sock")
        client = persistd.Client(socket, autostart=False)
        assert client.autostart is False
        with pytest.raises(ConnectionError, match="autostart is off"):
            client.dump(1, tmp_path / "v.pkl")
        assert not os.path.exists(socket)
        assert not (tmp_path / "v.pkl").exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_autostart_true_starts_one_on_its_socket(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(prefix="pdc")
    os.chmod(directory, 0o700)
    socket = os.path.join(directory, "persistd.sock")
    env = dict(os.environ, PERSISTD_BIN=daemon_binary(), PERSISTD_AUTOSTART="0")
    env.pop("PERSISTD_SOCKET", None)
    # The argument wins over $PERSISTD_AUTOSTART=0; run in a child so the
    # daemon it starts is found and stopped here.
    script = (
        "import sys, numpy as np, persistd\n"
        "c = persistd.Client(sys.argv[1], autostart=True)\n"
        "c.dump(np.arange(5), sys.argv[2])\n"
        "print(c.status()['pid'], int(c.load(sys.argv[2]).sum()))\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", script, socket, str(tmp_path / "v.pkl")],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        pid, total = map(int, result.stdout.split())
        assert total == 10
        # Its store is derived from the socket (paths.store_for_socket).
        assert os.path.isdir(os.path.join(directory, "persistd.store"))
        os.kill(pid, 15)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_timeout_cancels_the_dump_and_leaves_nothing(tmp_path: Path) -> None:
    # Random data at xz's default level: many seconds of work, far beyond 1 ms.
    value = np.random.default_rng(0).integers(0, 255, 40 << 20, dtype=np.uint8)
    client = persistd.Client(timeout=0.001)
    with pytest.raises(TimeoutError, match="timeout"):
        client.dump(value, tmp_path / "big.pkl.xz")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="positive"):
        persistd.Client(timeout=0)


def test_closed_client_refuses_calls(tmp_path: Path) -> None:
    client = persistd.Client()
    client.dump(np.arange(3), tmp_path / "a.pkl")
    loaded = client.load(tmp_path / "a.pkl")
    client.close()
    assert "closed" in repr(client)
    with pytest.raises(RuntimeError, match="closed"):
        client.load(tmp_path / "a.pkl")
    np.testing.assert_array_equal(loaded, np.arange(3))  # still valid
    with persistd.Client() as again:
        np.testing.assert_array_equal(again.load(tmp_path / "a.pkl"), np.arange(3))
    with pytest.raises(RuntimeError, match="closed"):
        again.dump(1, tmp_path / "b.pkl")


def _child(client: persistd.Client, path: str, queue: Any) -> None:
    try:
        queue.put(float(client.load(path)["a"].sum()))
    except BaseException as exc:  # report, do not hang the parent
        queue.put(repr(exc))


def test_a_client_used_before_fork_works_in_the_children(
    other_daemon: Daemon, tmp_path: Path
) -> None:
    client = persistd.Client(other_daemon.socket)
    path = str(tmp_path / "v.pkl")
    client.dump({"a": np.arange(100000.0)}, path, compress=3)
    kept = client.load(path)  # the parent holds a session and a lease
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child, args=(client, path, queue)) for _ in range(3)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert results == [float(np.arange(100000.0).sum())] * 3
    np.testing.assert_array_equal(client.load(path)["a"], kept["a"])


def test_public_hints_resolve_at_runtime() -> None:
    """String annotations (``from __future__ import annotations``) must name
    things that exist (test_python_versions runs this on Python 3.9 too)."""
    for function in (persistd.dump, persistd.load, persistd.Client.__init__,
                     persistd.Client.dump, persistd.Client.load):
        hints = typing.get_type_hints(function)
        assert "Any" not in str(hints.get("filename", "")), function
    assert typing.get_type_hints(persistd.load)["mmap_mode"] == typing.Optional[
        typing.Literal["r+", "r", "w+", "c"]]


_TYPED_USE = """
import numpy as np
import persistd

persistd.dump(np.ones(3), "a.pkl", compress=("lz4", 3))
persistd.load("a.pkl", mmap_mode="r")
with persistd.Client(timeout=5.0, autostart=False) as client:
    path: str | None = client.dump({}, "b.pkl")
persistd.dump(np.ones(3), "a.pkl", compress=["lz4"])  # E: list
persistd.load("a.pkl", mmap_mode="rw")  # E: not a mode
persistd.Client(timeout="5")  # E: str
"""


def test_a_type_checker_sees_the_precise_hints(tmp_path: Path) -> None:
    """mypy over a user's script: py.typed is honoured and the bad calls
    (and only they) are errors."""
    pytest.importorskip("mypy")
    script = tmp_path / "use.py"
    script.write_text(_TYPED_USE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--python-version", "3.10",
         "--follow-imports=silent", "--ignore-missing-imports", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if ": error:" in line]
    expected = [n for n, text in enumerate(_TYPED_USE.splitlines(), 1) if "# E:" in text]
    assert sorted({int(line.split(":")[1]) for line in lines}) == expected, result.stdout
