"""Property round trips over dtypes, shapes, memory layouts and subclasses.

Every example goes through the real daemon and is checked against the value
and against joblib.load of the same file. Examples are few and small
(derandomized, bounded sizes) so the suite stays fast and reproducible.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistd import dump, load

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)

SCALAR_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    st.just(np.dtype(np.longdouble)),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.byte_string_dtypes(max_len=6),
    hnp.unicode_string_dtypes(endianness="?", max_len=6),
)
STRUCTURED_DTYPES = hnp.nested_dtypes(subtype_strategy=SCALAR_DTYPES, max_leaves=4, max_itemsize=64)
ANY_DTYPE = st.one_of(SCALAR_DTYPES, STRUCTURED_DTYPES)

COMPRESS = st.sampled_from([0, ("zlib", 1), ("lz4", 0), ("zstd", 1)])
JOBLIB_COMPRESS = st.sampled_from([0, ("zlib", 1), ("lz4", 0), ("gzip", 1)])


def assert_same_values(actual: np.ndarray, expected: np.ndarray) -> None:
    """Field by field, NaN/NaT equal to themselves, padding bytes ignored."""
    assert actual.shape == expected.shape
    if expected.dtype.names:
        for name in expected.dtype.names:
            assert_same_values(actual[name], expected[name])
    elif expected.dtype.hasobject:
        assert actual.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(actual, expected)


def native_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype joblib's ensure_native_byte_order gives an array of ``dtype``."""
    return joblib.numpy_pickle._ensure_native_byte_order(np.empty(0, dtype)).dtype


def roundtrip(path: Path, value: Any, compress: Any) -> tuple[Any, Any]:
    """Dump with persistd; load with persistd and (unless zstd) with joblib."""
    dump(value, path, compress=compress)
    zstd = isinstance(compress, tuple) and compress[0] == "zstd"
    return load(path), (None if zstd else joblib.load(path))


@SETTINGS
@given(array=hnp.arrays(ANY_DTYPE, SHAPES), compress=COMPRESS)
def test_dtypes_and_shapes(tmp_path: Path, array: np.ndarray, compress: Any) -> None:
    ours, theirs = roundtrip(tmp_path / "v.pkl", array, compress)
    assert type(ours) is np.ndarray
    assert ours.dtype == native_dtype(array.dtype)
    assert_same_values(ours, array)
    if theirs is not None:
        assert theirs.dtype == ours.dtype
        assert_same_values(theirs, array)
    kept = load(tmp_path / "v.pkl", ensure_native_byte_order=False)
    assert kept.dtype == array.dtype
    assert_same_values(kept, array)


@SETTINGS
@given(
    array=hnp.arrays(SCALAR_DTYPES, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)),
    layout=st.sampled_from(["F", "T", "step", "negative", "column"]),
    compress=JOBLIB_COMPRESS,
)
def test_layouts(tmp_path: Path, array: np.ndarray, layout: str, compress: Any) -> None:
    """F order is kept; other non-contiguous views come back C-contiguous."""
    view = {
        "F": np.asfortranarray(array),
        "T": array.T,
        "step": array[::2],
        "negative": array[::-1, ...],
        "column": array[..., 0],
    }[layout]
    ours, theirs = roundtrip(tmp_path / "v.pkl", view, compress)
    for loaded in (ours, theirs):
        assert_same_values(loaded, view)
        is_f = view.flags.f_contiguous and not view.flags.c_contiguous
        assert loaded.flags.f_contiguous if is_f else loaded.flags.c_contiguous
    mapped = load(tmp_path / "v.pkl", mmap_mode="r")
    assert_same_values(mapped, view)


OBJECTS = st.recursive(
    st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.binary(max_size=5)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)


@SETTINGS
@given(array=hnp.arrays(np.dtype(object), SHAPES, elements=OBJECTS), compress=JOBLIB_COMPRESS)
def test_object_arrays(tmp_path: Path, array: np.ndarray, compress: Any) -> None:
    ours, theirs = roundtrip(tmp_path / "v.pkl", array, compress)
    for loaded in (ours, theirs):
        assert loaded.dtype == object
        assert_same_values(loaded, array)
    assert not isinstance(load(tmp_path / "v.pkl", mmap_mode="r"), np.memmap)


@SETTINGS
@given(
    data=hnp.arrays(hnp.floating_dtypes(sizes=(32, 64)), hnp.array_shapes(min_dims=1, max_dims=2, max_side=8)),
    mask=st.data(),
)
def test_masked_arrays(tmp_path: Path, data: np.ndarray, mask: Any) -> None:
    bits = mask.draw(hnp.arrays(np.bool_, data.shape))
    masked = np.ma.array(data, mask=bits)
    ours, theirs = roundtrip(tmp_path / "v.pkl", masked, 0)
    for loaded in (ours, theirs):
        assert isinstance(loaded, np.ma.MaskedArray)
        np.testing.assert_array_equal(loaded.mask, masked.mask)
        assert_same_values(loaded.data, masked.data)


@SETTINGS
@given(array=hnp.arrays(hnp.integer_dtypes(), hnp.array_shapes(min_dims=2, max_dims=2, max_side=5)))
def test_matrix(tmp_path: Path, array: np.ndarray) -> None:
    matrix = np.matrix(array)
    ours, theirs = roundtrip(tmp_path / "v.pkl", matrix, 0)
    assert type(ours) is type(theirs)  # joblib 1.6 + numpy 2: a plain ndarray
    np.testing.assert_array_equal(ours, matrix)


def test_structured_with_padding_and_nesting(tmp_path: Path) -> None:
    inner = np.dtype([("a", "u1"), ("b", "<f8")], align=True)  # 7 padding bytes
    dtype = np.dtype([("id", "<i2"), ("inner", inner), ("vec", ">f4", (3,)), ("name", "U5")], align=True)
    assert dtype.itemsize > sum(dtype.fields[name][0].itemsize for name in dtype.names)
    value = np.zeros(7, dtype=dtype)
    value["id"] = np.arange(7)
    value["inner"]["a"] = 3
    value["inner"]["b"] = np.linspace(0, 1, 7)
    value["vec"] = np.arange(21).reshape(7, 3)
    value["name"] = "abc"
    for compress in (0, 3):
        ours, theirs = roundtrip(tmp_path / "v.pkl", value, compress)
        for loaded in (ours, theirs):
            assert loaded.dtype == value.dtype  # mixed byte order: not swapped
            assert_same_values(loaded, value)
        assert_same_values(load(tmp_path / "v.pkl", mmap_mode="r"), value)


def test_memmap_values(tmp_path: Path) -> None:
    source = np.memmap(tmp_path / "raw.bin", dtype=">i4", mode="w+", shape=(4, 5), order="F")
    source[:] = np.arange(20).reshape(4, 5)
    ours, theirs = roundtrip(tmp_path / "v.pkl", {"m": source, "view": source[1:3]}, 0)
    for loaded in (ours, theirs):
        assert type(loaded["m"]) is np.ndarray
        np.testing.assert_array_equal(loaded["m"], source)
        np.testing.assert_array_equal(loaded["view"], source[1:3])


@pytest.mark.parametrize("dtype", ["f8", "i8", "U3", "S2", "M8[s]", "c8", "?", "g"])
def test_one_element_and_scalars(tmp_path: Path, dtype: str) -> None:
    for value in (np.zeros((), dtype=dtype), np.zeros(1, dtype=dtype), np.zeros((1, 1, 1), dtype=dtype)):
        ours, theirs = roundtrip(tmp_path / "v.pkl", value, 0)
        for loaded in (ours, theirs):
            assert loaded.shape == value.shape and loaded.dtype == value.dtype


def test_numpy_scalars_and_dtypes_pickle_normally(tmp_path: Path) -> None:
    value = [np.float64(1.5), np.int8(-3), np.dtype([("a", ">i4")]), np.datetime64("2020-01-01")]
    ours, theirs = roundtrip(tmp_path / "v.pkl", value, 0)
    assert ours == value and theirs == value


def test_large_int64_shape_product(tmp_path: Path) -> None:
    """joblib #859: the element count is computed in int64."""
    value = np.zeros((1, 0, 2**31 + 5), dtype="u1")
    ours, theirs = roundtrip(tmp_path / "v.pkl", value, 0)
    assert ours.shape == value.shape == theirs.shape


def test_bytesio_round_trip_of_every_kind() -> None:
    value = {
        "f": np.arange(5, dtype=">f8"),
        "o": np.array([b"x", None], dtype=object),
        "s": np.array(["ab", "c"]),
        "t": np.arange(3, dtype="m8[D]"),
    }
    buffer = io.BytesIO()
    dump(value, buffer, compress=("zstd", 3))
    buffer.seek(0)
    loaded = load(buffer)
    for key in value:
        assert_same_values(loaded[key], value[key])
    assert loaded["f"].dtype.byteorder in ("=", "<" if sys.byteorder == "little" else ">")
