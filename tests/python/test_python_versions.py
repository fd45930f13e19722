"""The oldest and newest Python the wheel claims, each with the numpy major
version a user of it gets: Python 3.9 with numpy 1.x, Python 3.13 with
numpy 2.x. The session's wheel is installed from PyPI into a fresh venv of
that interpreter and round-trips a model through the session's daemon, with
real joblib (the newest that installs there) reading and writing the files.

Interpreters are looked up in pyenv's versions, then as ``pythonX.Y`` on
PATH; a missing one skips its case, saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Daemon

#: (Python, numpy requirement, numpy major that must result)
CASES = [("3.9", "numpy<2", "1"), ("3.13", "numpy>=2", "2")]

_ROUND_TRIP = """
import sys
import joblib, numpy as np, persistd

major, venv = sys.argv[1], sys.argv[2]
assert np.__version__.split(".")[0] == major, np.__version__
assert persistd.__file__.startswith(venv), persistd.__file__
model = {"w": np.arange(300000, dtype="f4").reshape(300, 1000),
         "b": np.linspace(0, 1, 7), "m": np.eye(3).astype(">f8"), "name": "m"}
with persistd.Client(timeout=120, autostart=False) as client:
    for compress in (0, 3):
        path = "m%d.pkl" % compress
        assert client.dump(model, path, compress=compress) == path
        for mode in (None, "r"):
            back = client.load(path, mmap_mode=mode)
            assert back["name"] == "m"
            for key in ("w", "b", "m"):
                np.testing.assert_array_equal(back[key], model[key])
        theirs = joblib.load(path)  # joblib reads what persistd wrote
        np.testing.assert_array_equal(theirs["w"], model["w"])
    joblib.dump(model, "j.pkl", compress=3)  # persistd reads what joblib wrote
    np.testing.assert_array_equal(persistd.load("j.pkl")["w"], model["w"])
import typing  # documentation and validation tools evaluate the public hints
for function in (persistd.dump, persistd.load, persistd.Client.__init__,
                 persistd.Client.dump, persistd.Client.load):
    typing.get_type_hints(function)
print("ok", sys.version.split()[0], np.__version__, joblib.__version__)
"""


def _interpreter(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python")))
    if candidates:
        return candidates[-1]
    found = shutil.which("python" + version)
    # pyenv's shims exist for every version and fail for those not selected.
    if found and "/shims/" not in found:
        return found
    return None


@pytest.mark.parametrize("version,numpy_spec,numpy_major", CASES)
def test_round_trip_on_python(
    version: str, numpy_spec: str, numpy_major: str, wheel: Path, daemon: Daemon, tmp_path: Path
) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip("no Python %s here (neither python%s on PATH nor in pyenv's versions): "
                    "install it to test the wheel there" % (version, version))
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # This interpreter's pip installs into the new venv (--python), from
    # PyPI, through pip's cache: the venv needs no pip of its own.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--disable-pip-version-check", str(wheel), numpy_spec, "joblib"],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    project = tmp_path / "project"
    project.mkdir()
    env = dict(os.environ, PERSISTD_SOCKET=daemon.socket, PERSISTD_AUTOSTART="0")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-W", "error::DeprecationWarning:persistd",
         "-c", _ROUND_TRIP, numpy_major, str(venv)],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok %s." % version), result.stdout
