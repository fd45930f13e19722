"""The C++ client against real joblib, through a real daemon.

persistd_tool (client/cpp) is the C++ client's command-line face: it dumps
a dict of arrays from C++ and inspects any joblib file through typed,
zero-copy views. Python's joblib is the oracle in both directions.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest

import persistd
from conftest import REPO_ROOT, Daemon

TOOL = Path(os.environ.get("PERSISTD_TOOL", REPO_ROOT / "bazel-bin" / "client" / "cpp" / "persistd_tool"))

pytestmark = pytest.mark.skipif(
    not TOOL.exists(), reason="persistd_tool not built (bazel build //client/cpp:persistd_tool)"
)

CODECS = ["none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"]


def tool(daemon: Daemon, *args: str) -> str:
    result = subprocess.run(
        [str(TOOL), "--socket", daemon.socket, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("codec", CODECS)
def test_cpp_dump_is_read_by_joblib_and_persistd(daemon: Daemon, tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"from_cpp_{codec}.pkl"
    tool(daemon, "demo-dump", str(path), codec)
    expected = {
        "ints": np.arange(10, dtype=np.int64),
        "matrix": (np.arange(12) / 2.0).reshape(3, 4),
        "small": np.array([1.5, -2.5], dtype=np.float32),
    }
    ours = persistd.load(path)
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value)
        assert ours[key].dtype == value.dtype
    if codec != "zstd":  # joblib has no zstd
        theirs = joblib.load(path)
        for key, value in expected.items():
            np.testing.assert_array_equal(theirs[key], value)


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
    lines = [line.split("\t") for line in tool(daemon, "inspect", str(path)).splitlines()]
    by_name = {fields[1]: fields for fields in lines}
    assert set(by_name) == set(model)
    for name, array in model.items():
        _, _, dtype, shape, total = by_name[name]
        if array.dtype == object:
            assert dtype == "|O"
            continue
        assert dtype == array.dtype.str
        assert shape == "(%s)" % ",".join(str(d) for d in array.shape)
        if array.dtype.kind in "fiu":
            assert float(total) == pytest.approx(float(array.sum()), rel=1e-6)
