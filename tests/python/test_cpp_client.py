"""The C++ client's command-line tools against real joblib, through a real daemon.

persistd_tool (client/cpp) dumps a fixed dict of arrays from C++, and
persistd-inspect (client/cpp/examples) lists any joblib file's arrays with
a CRC-32 of their bytes, read through the C++ client's zero-copy views.
Python's joblib is the oracle in both directions. (The C++ library's own
round trips with Python are tests/cpp/client_daemon_test.cc.)
"""

from __future__ import annotations

import os
import stat
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest

from conftest import REPO_ROOT, Daemon

TOOL = Path(os.environ.get("PERSISTD_TOOL", REPO_ROOT / "bazel-bin" / "client" / "cpp" / "persistd_tool"))
INSPECT = Path(
    os.environ.get("PERSISTD_INSPECT", REPO_ROOT / "bazel-bin" / "client" / "cpp" / "persistd-inspect")
)

pytestmark = pytest.mark.skipif(
    not TOOL.exists() or not INSPECT.exists(),
    reason="C++ tools not built (bazel build //client/cpp:persistd_tool //client/cpp:persistd-inspect)",
)

CODECS = ["none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"]

# What `persistd_tool demo-dump` writes.
DEMO = {
    "ints": np.arange(10, dtype=np.int64),
    "matrix": (np.arange(12) / 2.0).reshape(3, 4),
    "small": np.array([1.5, -2.5], dtype=np.float32),
}


def run_tool(
    daemon: Daemon, *args: str, preexec_fn: Callable[[], object] | None = None, binary: Path = TOOL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "--socket", daemon.socket, *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec_fn,
    )


def tool(daemon: Daemon, *args: str, preexec_fn: Callable[[], object] | None = None) -> str:
    result = run_tool(daemon, *args, preexec_fn=preexec_fn)
    assert result.returncode == 0, result.stderr
    return result.stdout


def inspect(daemon: Daemon, path: Path) -> dict[str, list[str]]:
    """name -> [path, name, dtype, shape, order, bytes, crc32] as the C++
    client sees it (persistd-inspect --tsv)."""
    result = run_tool(daemon, "--tsv", str(path), binary=INSPECT)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    return {fields[1]: fields for fields in lines}


def crc32(array: np.ndarray) -> str:
    return "%08x" % zlib.crc32(array.tobytes(order="A"))


def assert_demo_arrays(daemon: Daemon, path: Path) -> None:
    by_name = inspect(daemon, path)
    assert by_name.keys() == DEMO.keys()
    for name, array in DEMO.items():
        array_path, _, dtype, shape, order, nbytes, crc = by_name[name]
        assert array_path == '["%s"]' % name
        assert dtype == array.dtype.str
        assert shape == repr(array.shape)
        assert order == "C"
        assert int(nbytes) == array.nbytes
        assert crc == crc32(array)


@pytest.mark.parametrize("codec", CODECS)
def test_cpp_dump_is_read_by_joblib_and_persistd(daemon: Daemon, tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"from_cpp_{codec}.pkl"
    tool(daemon, "demo-dump", str(path), codec)
    assert_demo_arrays(daemon, path)
    if codec != "zstd":  # joblib has no zstd
        theirs = joblib.load(path)
        assert theirs.keys() == DEMO.keys()
        for key, value in DEMO.items():
            np.testing.assert_array_equal(theirs[key], value)
            assert theirs[key].dtype == value.dtype
    assert os.listdir(tmp_path) == [path.name]  # no temp file left beside it


def test_cpp_dump_modes_follow_umask_and_overwrite(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "private.pkl"
    tool(daemon, "demo-dump", str(path), preexec_fn=lambda: os.umask(0o077))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    for codec in ["none", "lz4"]:
        tool(daemon, "demo-dump", str(path), codec, preexec_fn=lambda: os.umask(0o077))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    shared = tmp_path / "shared.pkl"
    tool(daemon, "demo-dump", str(shared), preexec_fn=lambda: os.umask(0o022))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    np.testing.assert_array_equal(joblib.load(path)["matrix"], DEMO["matrix"])


def test_cpp_dump_writes_through_a_symlink(daemon: Daemon, tmp_path: Path) -> None:
    real = tmp_path / "real.pkl"
    real.write_bytes(b"old")
    link = tmp_path / "link.pkl"
    link.symlink_to(real.name)
    tool(daemon, "demo-dump", str(link), "zlib")
    assert link.is_symlink() and os.readlink(link) == real.name
    np.testing.assert_array_equal(joblib.load(real)["ints"], DEMO["ints"])
    assert sorted(os.listdir(tmp_path)) == ["link.pkl", "real.pkl"]


def test_cpp_load_refuses_a_fifo_at_once(daemon: Daemon, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run_tool(daemon, str(fifo), binary=INSPECT)  # must not wait for a writer
    assert result.returncode == 1
    assert "FIFO, not a regular file" in result.stderr


@pytest.mark.parametrize("compress", [0, 3, "lz4", "xz"])
def test_cpp_views_arrays_of_a_joblib_file(daemon: Daemon, tmp_path: Path, compress: object) -> None:
    path = tmp_path / "from_joblib.pkl"
    model = {
        "weights": np.linspace(0, 1, 3000).reshape(30, 100),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "bias": np.full(7, 0.5, dtype=np.float32),
        "bytes": np.arange(256, dtype=np.uint8),
        "names": np.array(["a", "bb"]),
        "objects": np.array([1, "x"], dtype=object),
    }
    joblib.dump(model, path, compress=compress)
    by_name = inspect(daemon, path)
    assert set(by_name) == set(model)
    for name, array in model.items():
        array_path, _, dtype, shape, order, _, crc = by_name[name]
        assert array_path == '["%s"]' % name
        if array.dtype == object:
            assert dtype == "|O"
            continue
        assert dtype == array.dtype.str
        assert shape == repr(array.shape)
        assert order == ("F" if name == "fortran" else "C")
        assert crc == crc32(array)
