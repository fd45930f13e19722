"""dump/load as an API: targets, return values, file objects, errors, and the
daemon behind them (sessions, leases, restarts, auto-start)."""

from __future__ import annotations

import bz2
import gc
import gzip
import io
import lzma
import os
import pickle
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from conftest import Daemon, daemon_binary, status
from persistd import __all__ as public_names
from persistd import __version__, dump, load


def test_public_names() -> None:
    assert sorted(public_names) == ["Client", "__version__", "dump", "load"]
    assert isinstance(__version__, str)


# -- targets and return values ------------------------------------------------
def test_return_values(tmp_path: Path) -> None:
    target = tmp_path / "a.pkl"
    assert dump(np.arange(3), str(target)) == str(target)
    assert dump(np.arange(3), target) == str(target)  # Path -> its str
    with open(target, "wb") as f:
        assert dump(np.arange(3), f) is None
    assert dump(np.arange(3), io.BytesIO()) is None


class CustomPath(os.PathLike):  # type: ignore[type-arg]
    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


@pytest.mark.parametrize("make", [str, Path, CustomPath])
def test_path_types(tmp_path: Path, make: Any) -> None:
    value = {"a": np.arange(10.0), "b": "text"}
    target = make(str(tmp_path / "v.pkl"))
    assert dump(value, target, compress=1) == str(tmp_path / "v.pkl")
    loaded = load(target)
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert load(make(str(tmp_path / "v.pkl")), mmap_mode="r")["b"] == "text"


def test_bytes_paths(tmp_path: Path) -> None:
    """Like joblib: dump refuses bytes, load accepts them (open() does)."""
    target = tmp_path / "v.pkl"
    with pytest.raises(ValueError, match="Second argument should be a filename"):
        dump(1, os.fsencode(target))
    dump(np.arange(4), target)
    np.testing.assert_array_equal(load(os.fsencode(target)), np.arange(4))


def test_relative_paths_use_callers_cwd(in_tmp: Path) -> None:
    os.mkdir("sub")
    os.chdir("sub")
    dump({"x": np.arange(5)}, "rel.pkl", compress="gzip")
    assert (in_tmp / "sub" / "rel.pkl").exists()
    np.testing.assert_array_equal(load("rel.pkl")["x"], np.arange(5))
    np.testing.assert_array_equal(load("../sub/rel.pkl", mmap_mode="r")["x"], np.arange(5))


def test_dump_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    dump([np.arange(10)], target)
    before = target.read_bytes()
    with pytest.raises(TypeError, match="cannot pickle"):
        dump([np.arange(3), threading.Lock()], target)
    assert target.read_bytes() == before
    dump({"new": 1}, target)
    assert load(target) == {"new": 1}


def test_dump_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        dump(1, tmp_path / "missing" / "v.pkl")
    with pytest.raises(IsADirectoryError):
        dump(1, tmp_path)


@pytest.mark.parametrize("protocol", [6, 7])
def test_protocol_too_high_leaves_no_file(tmp_path: Path, protocol: int) -> None:
    with pytest.raises(ValueError, match=r"pickle protocol must be <= 5"):
        dump({"a": np.arange(3)}, tmp_path / "v.pkl", protocol=protocol)
    assert list(tmp_path.iterdir()) == []


# -- file objects ---------------------------------------------------------------
@pytest.mark.parametrize("opener", [bz2.BZ2File, gzip.GzipFile, lzma.LZMAFile])
@pytest.mark.parametrize("value", [np.random.random((10, 10)), "some data"])
def test_compressed_file_objects(tmp_path: Path, opener: Any, value: Any) -> None:
    """joblib's test_file_handle_persistence: dump into a compressor's file
    object, load through the same class and through a plain open()."""
    target = tmp_path / "v.pkl"
    with opener(target, "wb") as f:
        dump(value, f)
    with opener(target, "rb") as f:
        first = load(f)
    with open(target, "rb") as f:
        second = load(f)
    for loaded in (first, second, joblib.load(target)):
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded, value)
        else:
            assert loaded == value


@pytest.mark.parametrize("compress", [0, 3, "lz4"])
def test_open_file_objects(tmp_path: Path, compress: Any) -> None:
    value = {"a": np.arange(100.0), "o": np.array([1, None], dtype=object)}
    target = tmp_path / "v.pkl"
    with open(target, "wb") as f:
        dump(value, f, compress=compress)
    with open(target, "rb") as f:
        loaded = load(f)
    np.testing.assert_array_equal(loaded["a"], value["a"])
    np.testing.assert_array_equal(joblib.load(target)["a"], value["a"])
    with open(target, "rb", buffering=0) as f:  # raw FileIO
        np.testing.assert_array_equal(load(f)["a"], value["a"])


@pytest.mark.parametrize("value", [np.random.random((10, 10)), "some data"])
def test_bytesio(value: Any) -> None:
    """joblib's test_in_memory_persistence: no seek between dump and load."""
    buffer = io.BytesIO()
    dump(value, buffer)
    loaded = load(buffer)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    else:
        assert loaded == value


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "lzma", "xz", "lz4", "zstd"])
def test_consecutive_values_in_one_file_object(tmp_path: Path, compress: Any) -> None:
    """Each load leaves a seekable object just after its value (joblib #1161)."""
    buffer = io.BytesIO()
    for i in range(3):
        dump({"i": i, "a": np.full(5, i)}, buffer, compress=compress)
    buffer.seek(0)
    for i in range(3):
        loaded = load(buffer)
        assert loaded["i"] == i
        np.testing.assert_array_equal(loaded["a"], np.full(5, i))
    target = tmp_path / "many.pkl"
    target.write_bytes(buffer.getvalue())
    with open(target, "rb") as f:
        assert [load(f)["i"] for _ in range(3)] == [0, 1, 2]


def _dumped(value: Any, compress: Any) -> bytes:
    buffer = io.BytesIO()
    dump(value, buffer, compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize("buffering", [-1, 0], ids=["buffered", "raw"])
@pytest.mark.parametrize("compress", [0, 3, "gzip", "lz4", "zstd"])
def test_socket_left_open(compress: Any, buffering: int) -> None:
    """joblib's test_pickle_in_socket: a socket that stays open after the
    value must load without reading to its end (it used to block forever),
    even when the value trickles in, and consecutive values load in turn
    (bytes read past one value are the start of the next)."""
    values = [{"i": i, "a": np.arange(300_000.0) + i} for i in range(3)]
    payload = b"".join(_dumped(value, compress) for value in values)
    sender, receiver = socket.socketpair()
    receiver.settimeout(30)  # a regression fails instead of hanging

    def trickle() -> None:
        try:
            for start in range(0, len(payload), 200_000):
                sender.sendall(payload[start : start + 200_000])
                time.sleep(0.01)
        except OSError:
            pass  # the receiver failed and closed its end

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        with receiver.makefile("rb", buffering=buffering) as stream:
            for value in values:
                loaded = load(stream)
                assert loaded["i"] == value["i"]
                np.testing.assert_array_equal(loaded["a"], value["a"])
    finally:
        receiver.close()
        thread.join()
        sender.close()


def test_file_object_named_by_descriptor(tmp_path: Path) -> None:
    """Objects whose ``name`` is an int (``open(fd)``, a socket's makefile)."""
    target = tmp_path / "v.pkl"
    dump(np.arange(4), target, compress=3)
    with open(os.open(target, os.O_RDONLY), "rb") as f:
        assert isinstance(f.name, int)
        with pytest.warns(UserWarning, match="compressed file %d" % f.name):
            np.testing.assert_array_equal(load(f, mmap_mode="r"), np.arange(4))


def test_pipe_with_values_back_to_back() -> None:
    values = [{"i": i, "a": np.arange(1000.0) * i} for i in range(3)]
    payload = b"".join(_dumped(value, 3 if i % 2 else 0) for i, value in enumerate(values))
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_fd, payload), os.close(write_fd)))
    writer.start()
    with open(read_fd, "rb") as stream:
        loaded = [load(stream) for _ in values]
        assert stream.read() == b""
    writer.join()
    for got, value in zip(loaded, values):
        np.testing.assert_array_equal(got["a"], value["a"])


def test_socket_truncated_value_raises_at_eof() -> None:
    payload = _dumped({"a": np.arange(10_000.0)}, 0)
    sender, receiver = socket.socketpair()
    receiver.settimeout(30)
    sender.sendall(payload[: len(payload) // 2])
    sender.close()
    with receiver.makefile("rb") as stream, pytest.raises(ValueError, match="truncated"):
        load(stream)
    receiver.close()


def test_file_object_mmap_warnings(tmp_path: Path) -> None:
    obj = np.random.random((10, 10))
    buffer = io.BytesIO()
    dump(obj, buffer)
    buffer.seek(0)
    with pytest.warns(UserWarning) as record:
        np.testing.assert_array_equal(load(buffer, mmap_mode="r+"), obj)
    assert [str(w.message) for w in record] == [
        'In memory persistence is not compatible with mmap_mode "r+" flag passed. '
        "mmap_mode option will be ignored."
    ]

    target = tmp_path / "v.pkl"
    with open(target, "wb") as f:
        dump(obj, f, compress=("gzip", 3))
    with gzip.GzipFile(target, "rb") as f:
        with pytest.warns(UserWarning) as record:
            load(f, mmap_mode="r+")
        assert [str(w.message) for w in record] == [
            '"%r" is not a raw file, mmap_mode "r+" flag will be ignored.' % f
        ]
    with open(target, "rb") as f:
        with pytest.warns(UserWarning) as record:
            load(f, mmap_mode="r")
        assert [str(w.message) for w in record] == [
            'mmap_mode "r" is not compatible with compressed file %s. "r" flag will be ignored.' % target
        ]

    with open(target, "wb") as f:
        dump(obj, f)
    with open(target, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw file: silently loaded in memory
        loaded = load(f, mmap_mode="r+")
    assert not isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, obj)


# -- argument errors --------------------------------------------------------------
def test_native_byte_order_with_mmap_is_refused_before_opening() -> None:
    with pytest.raises(ValueError) as info:
        load("/path/to/some/dump.pkl", ensure_native_byte_order=True, mmap_mode="r+")
    assert str(info.value) == (
        "Native byte ordering can only be enforced if 'mmap_mode' parameter "
        "is set to None, but got 'mmap_mode=r+' instead."
    )


def test_bad_mmap_mode(tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    dump(np.arange(3), target)
    with pytest.raises(ValueError) as info:
        load(target, mmap_mode="rw")
    with pytest.raises(ValueError) as numpy_info:
        np.memmap(target, mode="rw")
    assert str(info.value) == str(numpy_info.value)


# -- bad files ----------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nope.pkl"), mmap_mode="r")


def test_empty_file(tmp_path: Path) -> None:
    target = tmp_path / "empty.pkl"
    target.write_bytes(b"")
    with pytest.raises(EOFError):
        joblib.load(target)
    with pytest.raises(EOFError):
        load(target)
    with pytest.raises(EOFError):
        load(io.BytesIO())


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz", "lz4"])
def test_truncated_file(tmp_path: Path, compress: Any) -> None:
    target = tmp_path / "v.pkl"
    dump({"a": np.random.random(5000)}, target, compress=compress)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError) as info:
        load(target)
    assert "v.pkl" in str(info.value)


def test_corrupt_files(tmp_path: Path) -> None:
    target = tmp_path / "garbage.pkl"
    target.write_bytes(b"\x80\x04this is not a pickle at all" * 10)
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        load(target)
    compressed = tmp_path / "garbage.gz"
    compressed.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(ValueError) as info:
        load(compressed)
    assert "garbage.gz" in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_plain_pickles_load(tmp_path: Path) -> None:
    """joblib.load reads plain pickle files too; so do we."""
    target = tmp_path / "plain.pkl"
    value = {"a": np.arange(7), "b": [1, 2]}
    with open(target, "wb") as f:
        pickle.dump(value, f)
    loaded = load(target)
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["b"] == [1, 2]


def test_unicode_error_is_reported_like_joblib(tmp_path: Path) -> None:
    """A py2 str with non-ASCII bytes (protocol 2 SHORT_BINSTRING)."""
    target = tmp_path / "py2.pkl"
    target.write_bytes(b"\x80\x02U\x02\xc3\xa9q\x00.")
    with pytest.raises(ValueError, match="You may be trying to read with python 3 a joblib pickle"):
        load(target)
    with pytest.raises(ValueError, match="You may be trying to read with python 3 a joblib pickle"):
        joblib.load(target)


# -- the daemon behind the API ---------------------------------------------------------
def test_leases_are_released_after_arrays_die(fresh_daemon: Daemon, tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    # Random doubles barely compress: the file is above the inline
    # threshold, so the load maps a leased segment.
    dump({"a": np.random.random(20_000), "b": np.ones(10)}, target, compress=3)
    loaded = load(target)
    view = loaded["a"][10:20]
    del loaded
    gc.collect()
    dump(0, tmp_path / "ping.pkl")  # any RPC flushes pending releases
    assert status(fresh_daemon.socket).leased_segments == 1  # the view holds it
    del view
    gc.collect()
    dump(0, tmp_path / "ping.pkl")
    assert status(fresh_daemon.socket).leased_segments == 0

    mapped = load(target, mmap_mode="r")
    dump(0, tmp_path / "ping.pkl")
    assert status(fresh_daemon.socket).leased_segments == 1
    del mapped
    gc.collect()
    dump(0, tmp_path / "ping.pkl")
    assert status(fresh_daemon.socket).leased_segments == 0


def test_second_load_is_a_cache_hit(fresh_daemon: Daemon, tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    value = np.random.random((300, 300))
    # Written by joblib: a persistd dump would have warmed the cache.
    joblib.dump(value, target, compress="gzip")
    first = load(target)
    second = load(target)
    np.testing.assert_array_equal(first, second)
    reply = status(fresh_daemon.socket)
    assert reply.loads == 2 and reply.cache_hits == 1


def test_daemon_restart_is_survived(fresh_daemon: Daemon, tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    value = {"a": np.arange(50.0)}
    dump(value, target, compress=1)
    before = load(target)
    fresh_daemon.stop()
    fresh_daemon.start()
    again = load(target)  # a new session is opened transparently
    np.testing.assert_array_equal(again["a"], value["a"])
    np.testing.assert_array_equal(before["a"], value["a"])  # old arrays stay valid
    dump(value, tmp_path / "w.pkl")


def test_daemon_killed_gives_connection_error(fresh_daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSISTD_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no persistd to start
    dump(1, tmp_path / "v.pkl")
    fresh_daemon.stop(signal.SIGKILL)
    with pytest.raises(ConnectionError) as info:
        load(tmp_path / "v.pkl")
    assert "persistd is not running at %s" % fresh_daemon.socket in str(info.value)
    assert "PERSISTD_BIN" in str(info.value)


def test_auto_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no daemon on the socket and PERSISTD_BIN set, the client starts one."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="pd")
    socket = os.path.join(directory, "persistd.sock")
    monkeypatch.setenv("PERSISTD_SOCKET", socket)
    monkeypatch.setenv("PERSISTD_BIN", daemon_binary())
    monkeypatch.setenv("PERSISTD_STORE", os.path.join(directory, "store"))
    try:
        dump({"a": np.arange(3)}, tmp_path / "v.pkl")
        np.testing.assert_array_equal(load(tmp_path / "v.pkl")["a"], np.arange(3))
        reply = status(socket)
        assert reply is not None
        # The daemon's own log, in its store ($PERSISTD_STORE here).
        assert os.path.exists(os.path.join(directory, "store", "persistd.log"))
        assert not os.path.exists(os.path.join(directory, "persistd.log"))
    finally:
        reply = status(socket)
        if reply is not None:
            os.kill(reply.pid, signal.SIGTERM)
