"""joblib.Memory(location, backend="persistd"): results cached through the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import persistd
import persistd.admin
from conftest import Daemon


def cached_counter(memory: joblib.Memory) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def make(n: int) -> dict[str, Any]:
        calls.append(n)
        return {"x": np.arange(n, dtype=np.float64), "n": n}

    return memory.cache(make), calls


def test_cache_hit_miss_and_clear(tmp_path: Path) -> None:
    memory = joblib.Memory(tmp_path, backend="persistd", verbose=0)
    from persistd.memory import PersistdStoreBackend

    assert isinstance(memory.store_backend, PersistdStoreBackend)
    make, calls = cached_counter(memory)
    first = make(100_000)
    second = make(100_000)
    assert calls == [100_000]
    np.testing.assert_array_equal(second["x"], first["x"])
    make(5)
    assert calls == [100_000, 5]
    # The result is a joblib file: joblib itself reads it.
    outputs = Path(memory.location).rglob("output.pkl")
    assert sorted(joblib.load(output)["n"] for output in outputs) == [5, 100_000]
    make.clear()
    make(100_000)
    assert calls == [100_000, 5, 100_000]
    memory.clear(warn=False)
    make(5)
    assert calls == [100_000, 5, 100_000, 5]


def test_mmap_mode_r_maps_the_daemons_segment_even_compressed(
    daemon: Daemon, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        # joblib's Memory says so for its own backend; persistd maps them.
        warnings.filterwarnings("ignore", "Compressed results cannot be memmapped")
        memory = joblib.Memory(tmp_path, backend="persistd", mmap_mode="r", compress=3, verbose=0)
    make, calls = cached_counter(memory)
    make(200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cannot be memmapped" on load
        hit = make(200_000)
    assert calls == [200_000]
    assert isinstance(hit["x"], np.memmap)
    assert not hit["x"].flags.writeable
    assert str(hit["x"].filename).startswith(daemon.store)  # shared, daemon-owned
    np.testing.assert_array_equal(hit["x"], np.arange(200_000, dtype=np.float64))
    assert joblib.load(next(Path(memory.location).rglob("output.pkl")))["n"] == 200_000


def test_a_failed_dump_warns_and_returns_the_result(tmp_path: Path) -> None:
    memory = joblib.Memory(tmp_path, backend="persistd", verbose=0)

    @memory.cache
    def unpicklable() -> Any:
        return lambda: None  # noqa: E731

    with pytest.warns(Warning, match="Unable to cache"):
        result = unpicklable()
    assert callable(result)


@pytest.mark.parametrize("first", ["persistd", "joblib"])
def test_registered_whatever_the_import_order(first: str, tmp_path: Path) -> None:
    """``import persistd`` is enough, before or after joblib (without
    importing joblib itself when it is not used)."""
    imports = "import persistd, joblib" if first == "persistd" else "import joblib, persistd"
    script = textwrap.dedent(
        """
        import sys
        import persistd as p
        assert "joblib" not in sys.modules
        %s
        m = joblib.Memory(sys.argv[1], backend="persistd", verbose=0)
        print(type(m.store_backend).__name__)
        """
        % imports
    )
    if first == "joblib":
        script = script.replace("import persistd as p\nassert \"joblib\" not in sys.modules\n", "")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PersistdStoreBackend"


def test_module_import_registers_too() -> None:
    import persistd.memory

    from joblib.memory import _STORE_BACKENDS

    assert _STORE_BACKENDS["persistd"] is persistd.memory.PersistdStoreBackend
    assert persistd.memory.BACKEND_NAME == "persistd"
    assert persistd.__name__ == "persistd"


def test_joblibs_own_memory_tests_pass_on_the_persistd_backend(
    daemon: Daemon, tmp_path: Path
) -> None:
    """joblib's test_memory.py, with its default ("local") backend replaced
    by persistd's: every Memory it makes caches through the daemon."""
    tests = Path(joblib.__file__).parent / "test" / "test_memory.py"
    if not tests.exists():
        pytest.skip("this joblib was installed without its tests")
    (tmp_path / "persistd_as_local_backend.py").write_text(
        "import joblib.memory, persistd.memory\n"
        "joblib.memory._STORE_BACKENDS['local'] = persistd.memory.PersistdStoreBackend\n"
    )
    before = persistd.admin.status()["dumps"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "persistd_as_local_backend", "-W", "ignore::pytest.PytestUnknownMarkWarning",
         str(tests)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout
    assert persistd.admin.status()["dumps"] - before > 100  # they went through the daemon
