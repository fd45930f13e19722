"""Our files are joblib's files: real joblib is the oracle both ways.

* joblib.load reads what persistd.dump wrote, for every joblib codec, a
  range of levels, pickle protocols 0-5 and the kinds of values joblib's own
  test suite uses;
* persistd.load reads what joblib.dump wrote;
* a compressed file is exactly ``codec(uncompressed file)``: decompressing
  ours with Python's own codec modules gives the bytes of our uncompressed
  dump of the same value, and joblib writes the same uncompressed bytes.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import pickle
import zlib
from pathlib import Path
from typing import Any, Callable

import joblib
import lz4.frame
import numpy as np
import pytest

from persistd import dump, load

CODECS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]
MAGIC = {
    "zlib": b"\x78",
    "gzip": b"\x1f\x8b",
    "bz2": b"BZ",
    "lzma": b"\x5d\x00",
    "xz": b"\xfd\x37\x7a\x58\x5a",
    "lz4": b"\x04\x22\x4d\x18",
    "zstd": b"\x28\xb5\x2f\xfd",
}
DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.decompress,
    "gzip": gzip.decompress,
    "bz2": bz2.decompress,
    "lzma": lambda data: lzma.decompress(data, format=lzma.FORMAT_ALONE),
    "xz": lambda data: lzma.decompress(data, format=lzma.FORMAT_XZ),
    "lz4": lz4.frame.decompress,
}


class Point:
    """A plain user class holding arrays (module level, so it pickles)."""

    def __init__(self, x: np.ndarray, label: str) -> None:
        self.x = x
        self.label = label

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Point)
            and self.label == other.label
            and np.array_equal(self.x, other.x)
        )


def values() -> dict[str, Any]:
    rng = np.random.RandomState(0)
    return {
        "array": rng.random_sample((40, 7)),
        "fortran": np.asfortranarray(rng.randint(0, 100, (6, 9))),
        "non_contiguous": np.arange(60.0).reshape(6, 10)[::2, ::3],
        "big_endian": np.arange(20, dtype=">i4"),
        "object": np.array([1, "abc", {"a": 1}, None], dtype=object),
        "scalar_0d": np.array(3.5),
        "empty": np.empty((0, 3)),
        "mixed": {"a": [np.arange(5), (np.ones(3), "s")], "n": 1, "f": 2.5},
        "instance": Point(np.linspace(0, 1, 9), "p"),
        "range": range(10),
        "none": None,
        "bytes": bytes(range(256)),
        "text": "C'est l'\xe9t\xe9 !",
        "empty_containers": ([], (), {}),
    }


def assert_same(actual: Any, expected: Any) -> None:
    """Deep equality that compares arrays by value and dtype (native order
    after joblib's byte-order rule)."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray)
        assert actual.shape == expected.shape
        if expected.dtype.hasobject:
            assert list(actual.ravel()) == list(expected.ravel())
        else:
            assert actual.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
            np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    else:
        assert actual == expected


VALUE_NAMES = list(values())


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("level", [1, 3, 9])
def test_joblib_reads_ours(tmp_path: Path, codec: str, level: int) -> None:
    value = values()
    path = tmp_path / "ours.pkl"
    assert dump(value, path, compress=(codec, level)) == str(path)
    assert path.read_bytes().startswith(MAGIC[codec])
    assert_same(joblib.load(path), value)
    assert_same(load(path), value)


@pytest.mark.parametrize("name", VALUE_NAMES)
@pytest.mark.parametrize("compress", [0, ("zlib", 3), ("lz4", 0), ("xz", 1)])
def test_each_kind_both_ways(tmp_path: Path, name: str, compress: Any) -> None:
    value = values()[name]
    ours, theirs = tmp_path / "ours.pkl", tmp_path / "theirs.pkl"
    dump(value, ours, compress=compress)
    joblib.dump(value, theirs, compress=compress)
    assert_same(joblib.load(ours), value)
    assert_same(load(theirs), value)
    assert_same(load(ours), value)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("level", [None, 1, 6])
def test_we_read_joblib(tmp_path: Path, codec: str, level: int | None) -> None:
    value = values()
    path = tmp_path / "theirs.pkl"
    joblib.dump(value, path, compress=codec if level is None else (codec, level))
    assert_same(load(path), value)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("compress", [0, 3])
def test_protocols(tmp_path: Path, protocol: int, compress: int) -> None:
    value = values()
    ours, theirs = tmp_path / "ours.pkl", tmp_path / "theirs.pkl"
    dump(value, ours, compress=compress, protocol=protocol)
    joblib.dump(value, theirs, compress=compress, protocol=protocol)
    assert_same(joblib.load(ours), value)
    assert_same(load(ours), value)
    assert_same(load(theirs), value)
    if protocol >= 2:
        raw = zlib.decompress(ours.read_bytes()) if compress else ours.read_bytes()
        assert raw[:2] == bytes([0x80, protocol])


def test_default_protocol_is_highest(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    dump(np.arange(3), path)
    assert path.read_bytes()[:2] == bytes([0x80, pickle.HIGHEST_PROTOCOL])
    dump(np.arange(3), path, protocol=-1)
    assert path.read_bytes()[:2] == bytes([0x80, pickle.HIGHEST_PROTOCOL])


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_is_codec_of_uncompressed(tmp_path: Path, codec: str) -> None:
    """Decompressing our file with Python's module gives our uncompressed
    file byte for byte (alignment padding is computed on stream offsets)."""
    value = values()
    plain, packed = tmp_path / "plain.pkl", tmp_path / "packed.pkl"
    dump(value, plain, compress=0)
    dump(value, packed, compress=(codec, 3))
    assert DECOMPRESS[codec](packed.read_bytes()) == plain.read_bytes()


def test_uncompressed_bytes_match_joblib_for_arrays(tmp_path: Path) -> None:
    """For a value of arrays and builtins, joblib's memo and framing choices
    aside, the array records are identical: same wrapper state, same padding,
    same data. Compare the array data regions joblib wrote with ours."""
    value = [np.arange(6.0).reshape(2, 3), np.asfortranarray(np.ones((3, 2), ">i2"))]
    ours, theirs = tmp_path / "ours.pkl", tmp_path / "theirs.pkl"
    dump(value, ours, protocol=4)
    joblib.dump(value, theirs, protocol=4)
    for array in value:
        data = array.tobytes(order="F" if array.flags.f_contiguous else "C")
        for path in (ours, theirs):
            raw = path.read_bytes()
            assert raw.find(data) >= 0 and raw.find(data) % 16 == 0


@pytest.mark.parametrize("level", [None, 1, 9])
def test_zstd_round_trip(tmp_path: Path, level: int | None) -> None:
    """zstd is persistd's addition: joblib cannot read these files."""
    value = values()
    path = tmp_path / "value.pkl"
    dump(value, path, compress="zstd" if level is None else ("zstd", level))
    assert path.read_bytes().startswith(MAGIC["zstd"])
    assert_same(load(path), value)
    zst = tmp_path / "value.pkl.zst"
    dump(value, zst)
    assert zst.read_bytes().startswith(MAGIC["zstd"])
    assert_same(load(zst), value)


def test_extension_inference_matches_joblib(tmp_path: Path) -> None:
    value = {"a": np.arange(100)}
    for ext in (".z", ".gz", ".bz2", ".lzma", ".xz", ".lz4", ".pkl"):
        ours, theirs = tmp_path / ("ours" + ext), tmp_path / ("theirs" + ext)
        dump(value, str(ours))
        joblib.dump(value, str(theirs))
        width = 1 if ext == ".pkl" else 2  # .pkl: protocols differ (5 vs 4)
        assert ours.read_bytes()[:width] == theirs.read_bytes()[:width], ext
        assert_same(joblib.load(ours), value)


def test_masked_array_and_subclass(tmp_path: Path) -> None:
    """Subclasses other than matrix/memmap pickle themselves (joblib's rule)."""
    masked = np.ma.masked_greater(np.arange(10.0), 5)
    path = tmp_path / "masked.pkl"
    dump(masked, path)
    for loaded in (load(path), joblib.load(path), load(path, mmap_mode="r")):
        assert isinstance(loaded, np.ma.MaskedArray)
        np.testing.assert_array_equal(loaded.mask, masked.mask)


def test_matrix_comes_back_like_joblib(tmp_path: Path) -> None:
    """joblib 1.6 under numpy 2 restores np.matrix as a plain ndarray
    (ndarray.__array_prepare__ is gone); we do exactly what it does."""
    matrix = np.matrix([[1, 2], [3, 4]])
    path = tmp_path / "matrix.pkl"
    dump(matrix, path)
    ours, theirs = load(path), joblib.load(path)
    assert type(ours) is type(theirs)
    np.testing.assert_array_equal(ours, matrix)
