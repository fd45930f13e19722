"""load(..., allow_pickle=False): arrays, dtypes and builtin values load;
every other global is refused by name, before its module is imported."""

from __future__ import annotations

import collections
import datetime
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from persistd import dump, load

SAFE_VALUES: list[Any] = [
    {"array": np.random.rand(5), "metadata": {"version": 1}},
    [np.arange(10, dtype=np.int16), np.zeros((3, 4), order="F"), np.array(["a", "bc"])],
    (1, 2.5, 3 + 4j, "s", b"b", bytearray(b"ba"), None, True, {1, 2}, frozenset([3])),
    np.array([1, "x", None], dtype=object),
    np.dtype([("a", "<i4"), ("b", ">f8")]),
    [np.float64(1.5), np.int64(7), np.bool_(True), np.datetime64("2020-01-01")],
    collections.OrderedDict(a=1),
    np.ma.masked_array([1, 2], mask=[0, 1]).data,  # a plain ndarray
    np.matrix([[1, 2]]),
    slice(1, 5), range(3),
]


@pytest.mark.parametrize("writer", ["persistd", "joblib"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("compress", [0, 3])
def test_safe_values_load(tmp_path: Path, writer: str, protocol: int, compress: int) -> None:
    target = str(tmp_path / "v.pkl")
    value = SAFE_VALUES
    (dump if writer == "persistd" else joblib.dump)(value, target, compress=compress, protocol=protocol)
    expected = load(target)
    got = load(target, allow_pickle=False)
    assert repr(got) == repr(expected)


class Custom:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("value,name", [
    (Custom(), "test_safe_load.Custom"),
    (datetime.date(2020, 1, 1), "datetime.date"),
])
def test_other_globals_are_refused_by_name(tmp_path: Path, value: Any, name: str) -> None:
    target = tmp_path / "v.pkl"
    dump({"a": np.arange(3), "v": value}, target)
    with pytest.raises(pickle.UnpicklingError, match="refuses the global '%s'" % name):
        load(target, allow_pickle=False)
    assert type(load(target, allow_pickle=False, allowed_globals=[type(value)])["v"]) is type(value)
    assert type(load(target, allow_pickle=False, allowed_globals=[name])["v"]) is type(value)


def test_a_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    """os.system is refused before anything is called."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, ("touch %s" % marker,))

    target = tmp_path / "evil.pkl"
    dump([np.arange(3), Evil()], target)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refuses the global 'posix.system'"):
        load(target, allow_pickle=False)
    assert not marker.exists()
    with open(target, "rb") as f:
        with pytest.raises(pickle.UnpicklingError, match="posix.system"):
            load(f, allow_pickle=False)
    assert not marker.exists()


def test_refused_module_is_not_imported(tmp_path: Path) -> None:
    """A global of a module never imported stays unimported: importing alone
    can run code."""
    script = (
        "import pickle, sys\n"
        "from persistd import load\n"
        "try:\n"
        "    load(sys.argv[1], allow_pickle=False)\n"
        "except pickle.UnpicklingError as e:\n"
        "    print('refused' if 'antigravity' not in sys.modules else 'imported')\n"
    )
    target = tmp_path / "g.pkl"
    target.write_bytes(b"\x80\x02cantigravity\nfly\n.")  # GLOBAL, STOP
    out = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", out.stderr
