"""Files written by joblib 0.8.4 - 0.12.2 (shared/joblib-data, 66 files).

joblib 1.6 is the oracle: for every file, persistd.load returns what
joblib.load returns and emits the same warnings (DeprecationWarning for the
pre-0.10 formats, the alignment UserWarning per memmapped array of unpadded
files), and py27 files fail with joblib's "python 2" ValueError. The data
directory is $PERSISTD_JOBLIB_DATA or <repo>/../shared/joblib-data.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pytest

from conftest import joblib_data_dir
from persistd import load

DATA = joblib_data_dir()
EXTENSIONS = (".pkl", ".gz", ".gzip", ".bz2", ".lz4", ".xz", ".lzma")

EXPECTED = [
    np.arange(5, dtype=np.dtype("<i8")),
    np.arange(5, dtype=np.dtype("<f8")),
    np.array([1, "abc", {"a": 1, "b": 2}], dtype="O"),
    np.arange(256, dtype=np.uint8).tobytes(),
    np.matrix([0, 1, 2], dtype=np.dtype("<i8")),
    "C'est l'\xe9t\xe9 !",
]
PY2_MESSAGE = "You may be trying to read with python 3 a joblib pickle generated with python 2."


def data_files() -> list[str]:
    if not DATA.is_dir():
        return []
    return sorted(p.name for p in DATA.iterdir() if p.name.endswith(EXTENSIONS))


pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="joblib test data not found at %s" % DATA)


def test_all_66_files_are_present() -> None:
    files = [p for p in DATA.iterdir() if p.name != "README.md"]
    assert len(files) == 66


def run(reader: Callable[..., Any], path: str, **kwargs: Any) -> tuple[Any, list[tuple[type, str]]]:
    """Call ``reader(path, **kwargs)``; its result (or exception) and warnings."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # numpy >= 2.4 warns about py2-era dtype pickles (align=0); not ours.
        warnings.filterwarnings("ignore", message=".+align should be passed.+boolean.+align=0")
        try:
            result: Any = reader(path, **kwargs)
        except Exception as exc:  # compared with joblib's below
            result = exc
    return result, [(w.category, str(w.message)) for w in record]


def check_value(result: Any, reference: Any) -> None:
    assert isinstance(result, list) and len(result) == len(EXPECTED)
    for got, ref, expected in zip(result, reference, EXPECTED):
        if isinstance(expected, np.ndarray):
            assert type(got) is type(ref) or (isinstance(got, np.ndarray) and isinstance(ref, np.ndarray))
            assert got.dtype == ref.dtype
            if expected.dtype.hasobject:
                assert got.tolist() == expected.tolist()
            else:
                np.testing.assert_array_equal(got, expected)
        else:
            assert got == expected


@pytest.mark.parametrize("name", data_files())
def test_load_like_joblib(name: str) -> None:
    path = str(DATA / name)
    ours, our_warnings = run(load, path)
    theirs, their_warnings = run(joblib.load, path)
    if "_py27_" in name:
        assert isinstance(theirs, ValueError) and PY2_MESSAGE in str(theirs)
        assert isinstance(ours, ValueError), ours
        assert PY2_MESSAGE in str(ours)
        return
    if isinstance(ours, Exception):
        raise ours
    check_value(ours, theirs)
    assert our_warnings == their_warnings
    legacy = "_0.9" in name or "_0.8.4" in name
    assert len(our_warnings) == (1 if legacy else 0)


@pytest.mark.parametrize("name", [n for n in data_files() if n.endswith(".pkl")])
def test_mmap_like_joblib(name: str) -> None:
    path = str(DATA / name)
    ours, our_warnings = run(load, path, mmap_mode="r")
    theirs, their_warnings = run(joblib.load, path, mmap_mode="r")
    if "_py27_" in name:
        assert isinstance(ours, ValueError) and PY2_MESSAGE in str(ours)
        return
    if isinstance(ours, Exception):
        raise ours
    check_value(ours, theirs)
    assert [c for c, _ in our_warnings] == [c for c, _ in their_warnings]
    expected_user = 3 if re.search(r"_0\.1.+\.pkl$", name) else 0
    user = [m for c, m in our_warnings if issubclass(c, UserWarning) and not issubclass(c, DeprecationWarning)]
    assert len(user) == expected_user
    for message in user:
        assert re.search("memmapped.+%s.+segmentation fault" % re.escape(path), message)
    assert sorted(our_warnings, key=str) == sorted(their_warnings, key=str)
    if "_0.9" not in name:
        assert isinstance(ours[0], np.memmap) and isinstance(ours[1], np.memmap)


def test_companion_arrays_are_memmapped() -> None:
    """0.9.x .pkl files keep arrays in .npy companions: np.load maps them."""
    name = "joblib_0.9.2_pickle_py35_np19.pkl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load(str(DATA / name), mmap_mode="r")
    assert isinstance(loaded[0], np.memmap)
    np.testing.assert_array_equal(loaded[0], EXPECTED[0])


def test_zfile_with_companions() -> None:
    """The 0.9.4 cache_size file keeps arrays in .npy.z Z-file companions."""
    name = "joblib_0.9.4.dev0_compressed_cache_size_pickle_py35_np19.gz"
    path = str(DATA / name)
    with pytest.warns(DeprecationWarning, match="less than 0.10"):
        loaded = load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joblib's own copy of that warning
        reference = joblib.load(path)
    check_value(loaded, reference)
