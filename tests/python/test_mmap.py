"""mmap_mode semantics and byte order.

'r' and 'c' map the daemon's decompressed segment (compressed files too:
that is the product, N workers sharing one copy); 'r+'/'w+' map an
uncompressed file itself and are ignored with joblib's warning for
compressed files; mmap_mode=None gives private copy-on-write arrays.
"""

from __future__ import annotations

import mmap
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from persistd import dump, load

FOREIGN = ">" if sys.byteorder == "little" else "<"
NATIVE = "<" if sys.byteorder == "little" else ">"


class Holder:
    def __init__(self) -> None:
        rng = np.random.RandomState(0)
        self.array_float = rng.random_sample(100)
        self.array_int = rng.randint(0, 1000, 100)
        self.array_obj = np.array(["a", 10, 20.0], dtype=object)


@pytest.mark.parametrize("compress", [0, 3, "lz4"])
def test_mode_r(tmp_path: Path, compress: Any) -> None:
    target = tmp_path / "v.pkl"
    obj = Holder()
    dump(obj, target, compress=compress)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(target, mmap_mode="r")
    assert isinstance(loaded, Holder)
    for name in ("array_float", "array_int"):
        array = getattr(loaded, name)
        assert isinstance(array, np.memmap) and array.mode == "r"
        assert not array.flags.writeable
        np.testing.assert_array_equal(array, getattr(obj, name))
    assert not isinstance(loaded.array_obj, np.memmap)  # object arrays never
    assert list(loaded.array_obj) == list(obj.array_obj)


def test_compressed_r_maps_one_shared_segment(tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    dump(np.random.random((200, 50)), target, compress="gzip")
    first = load(target, mmap_mode="r")
    second = load(target, mmap_mode="r")
    assert first.filename == second.filename  # the same decompressed segment
    assert first.filename != str(target)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("compress", [0, 3])
def test_mode_c_is_private(tmp_path: Path, compress: int) -> None:
    target = tmp_path / "v.pkl"
    value = np.arange(100.0)
    dump(value, target, compress=compress)
    before = target.read_bytes()
    cow = load(target, mmap_mode="c")
    assert isinstance(cow, np.memmap) and cow.mode == "c" and cow.flags.writeable
    cow[:10] = -1
    assert target.read_bytes() == before
    np.testing.assert_array_equal(load(target, mmap_mode="r"), value)
    np.testing.assert_array_equal(load(target), value)


def test_mode_r_plus_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    obj = Holder()
    dump(obj, target)
    loaded = load(target, mmap_mode="r+")
    for name in ("array_float", "array_int"):
        array = getattr(loaded, name)
        assert isinstance(array, np.memmap) and array.mode == "r+"
        assert array.filename == str(target.resolve())
        assert array.flags.writeable
    loaded.array_float[0:10] = 10.0
    loaded.array_int[0:10] = 10
    loaded.array_float.flush()
    loaded.array_int.flush()
    for reader in (load, joblib.load):
        again = reader(target, mmap_mode="r")
        np.testing.assert_array_equal(again.array_float, loaded.array_float)
        np.testing.assert_array_equal(again.array_int, loaded.array_int)
    np.testing.assert_array_equal(load(target).array_float[:10], 10.0)


def test_mode_w_plus_is_r_plus(tmp_path: Path) -> None:
    target = tmp_path / "v.pkl"
    dump(np.arange(50), target)
    size = target.stat().st_size
    loaded = load(target, mmap_mode="w+")
    assert loaded.mode == "r+" and target.stat().st_size == size
    np.testing.assert_array_equal(loaded, np.arange(50))


@pytest.mark.parametrize("mode", ["r+", "w+"])
def test_r_plus_on_compressed_file_warns(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "v.pkl"
    value = np.random.random(10)
    dump(value, str(target), compress=1)
    with pytest.warns(UserWarning) as record:
        loaded = load(str(target), mmap_mode=mode)
    assert [str(w.message) for w in record] == [
        'mmap_mode "%s" is not compatible with compressed file %s. "%s" flag will be ignored.'
        % (mode, target, mode)
    ]
    assert not isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, value)
    loaded[0] = 42.0  # an ordinary private array
    assert load(str(target))[0] == value[0]


@pytest.mark.parametrize("compress", [0, 3])
def test_in_memory_arrays_are_private_and_writable(tmp_path: Path, compress: int) -> None:
    target = tmp_path / "v.pkl"
    value = np.arange(1000.0).reshape(10, 100)
    dump(value, target, compress=compress)
    first = load(target)
    second = load(target)
    assert not isinstance(first, np.memmap) and first.flags.writeable
    first[...] = -1.0
    np.testing.assert_array_equal(second, value)
    np.testing.assert_array_equal(load(target), value)


@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("mode", [None, "r", "r+"])
def test_alignment(tmp_path: Path, protocol: int, mode: str | None) -> None:
    """joblib's test_memmap_alignment_padding, for every way we hand out arrays."""
    rng = np.random.RandomState(42)
    value = {
        "a": rng.randn(2, 3),
        "b": np.arange(7, dtype="u1"),
        "c": rng.randn(11),
        "d": rng.randint(0, 9, 5).astype(np.int32),
    }
    target = tmp_path / "v.pkl"
    dump(value, target, protocol=protocol)
    loaded = load(target, mmap_mode=mode)
    for key, array in loaded.items():
        assert array.ctypes.data % 16 == 0, key
        assert array.flags.aligned
        np.testing.assert_array_equal(array, value[key])


def test_big_offset(tmp_path: Path) -> None:
    """An array whose data lies beyond mmap.ALLOCATIONGRANULARITY."""
    value = [np.zeros(mmap.ALLOCATIONGRANULARITY + 1, dtype="u1"), np.arange(10.0)]
    target = tmp_path / "v.pkl"
    dump(value, target)
    for mode in ("r", "r+", "c"):
        loaded = load(target, mmap_mode=mode)
        np.testing.assert_array_equal(loaded[1], value[1])


def test_memmap_input(tmp_path: Path) -> None:
    source = np.memmap(tmp_path / "raw.bin", dtype="f8", mode="w+", shape=(20,))
    source[:] = np.arange(20)
    target = tmp_path / "v.pkl"
    dump(source, target)
    for loaded in (load(target), joblib.load(target)):
        assert type(loaded) is np.ndarray  # joblib's rule: plain ndarray
        np.testing.assert_array_equal(loaded, np.arange(20))
    assert isinstance(load(target, mmap_mode="r"), np.memmap)


@pytest.mark.parametrize("mode", ["r", "c", "r+"])
def test_zero_size_and_0d(tmp_path: Path, mode: str) -> None:
    value = [np.empty((0, 4)), np.array(7.0), np.empty(0, dtype="S3"), np.arange(3)]
    target = tmp_path / "v.pkl"
    dump(value, target)
    loaded = load(target, mmap_mode=mode)
    for got, expected in zip(loaded, value):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


# -- byte order ------------------------------------------------------------------
def _mixed_values() -> list[np.ndarray]:
    return [
        np.arange(5, dtype=NATIVE + "i8"),
        np.arange(5, dtype=FOREIGN + "i8"),
        np.arange(5, dtype=FOREIGN + "f8"),
        np.array([(1, 2.0), (3, 4.0)], dtype=[("x", FOREIGN + "i8"), ("y", FOREIGN + "f8")]),
        np.array([(1, 2.0), (3, 4.0)], dtype=[("x", NATIVE + "i8"), ("y", FOREIGN + "f8")]),
        np.arange(4, dtype=FOREIGN + "c16"),
    ]


@pytest.mark.parametrize("writer", ["persistd", "joblib"])
@pytest.mark.parametrize("compress", [0, 3])
def test_byte_order_rules(tmp_path: Path, writer: str, compress: int) -> None:
    value = _mixed_values()
    target = tmp_path / "v.pkl"
    (dump if writer == "persistd" else joblib.dump)(value, target, compress=compress)

    auto = load(target)  # mmap_mode None: swapped to native (joblib's rule)
    theirs = joblib.load(target)
    for got, ref, original in zip(auto, theirs, value):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, original)
    assert auto[1].dtype.byteorder in ("=", NATIVE)
    assert auto[3].dtype.fields["x"][0].byteorder in ("=", NATIVE)
    assert auto[4].dtype == value[4].dtype  # a mixed struct is left alone

    kept = load(target, ensure_native_byte_order=False)
    for got, original in zip(kept, value):
        assert got.dtype == original.dtype
        np.testing.assert_array_equal(got, original)

    mapped = load(target, mmap_mode="r")  # memmaps are never swapped
    for got, original in zip(mapped, value):
        assert got.dtype == original.dtype
        np.testing.assert_array_equal(got, original)


def test_joblib_reads_our_big_endian(tmp_path: Path) -> None:
    value = np.arange(10, dtype=FOREIGN + "f4")
    target = tmp_path / "v.pkl"
    dump(value, target)
    np.testing.assert_array_equal(joblib.load(target), value)
    assert joblib.load(target, ensure_native_byte_order=False).dtype == value.dtype


def test_mmap_of_mixed_object_and_numeric(tmp_path: Path) -> None:
    """joblib's test_memmap_persistence_mixed_dtypes."""
    construct = (np.random.random_sample(10), np.array([1, "b"], dtype=object))
    target = tmp_path / "v.pkl"
    dump(construct, target)
    a_clone, b_clone = load(target, mmap_mode="r")
    assert isinstance(a_clone, np.memmap)
    assert not isinstance(b_clone, np.memmap)
