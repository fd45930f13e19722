"""The wheel a project installs, and deploy/install.sh, as a new user meets them.

The wheel is built with the daemon under test inside, installed with its
dependencies from PyPI into a fresh venv (no access to this repo's venv or
packages), and used from a directory outside the repo with nothing set but
a home and a runtime directory: the client must start the packaged daemon
by itself, on the default socket with the default store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import persistd

from conftest import REPO_ROOT, daemon_binary


def test_wheel_is_a_platform_wheel_with_the_daemon_and_scripts(wheel: Path) -> None:
    assert wheel.name == "persistd-%s-py3-none-linux_x86_64.whl" % persistd.__version__
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("persistd/_bin/persistd")
        assert (info.external_attr >> 16) & 0o111  # executable
        # The daemon's libraries ride along (setup.py, bundle_libraries).
        assert any(name.startswith("persistd/_libs/libgrpc++.so") for name in archive.namelist())
        entry_points = archive.read("persistd-%s.dist-info/entry_points.txt" % persistd.__version__).decode()
        metadata = archive.read("persistd-%s.dist-info/METADATA" % persistd.__version__).decode()
        assert "persistd/py.typed" in archive.namelist()  # PEP 561: hints are used
    assert "Requires-Python: >=3.9" in metadata  # test_python_versions tests 3.9 and 3.13
    assert "persistd = persistd.binary:main" in entry_points
    assert "persistctl = persistd.cli:main" in entry_points


@pytest.fixture
def fresh_user(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with nothing of ours in it: its own HOME and runtime
    directory, no PERSISTD_* variables, a PATH of system directories."""
    root = Path(tempfile.mkdtemp(prefix="pdu"))  # short: the socket goes here
    home, runtime = root / "home", root / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    for name in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE",
                 "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    try:
        yield env
    finally:
        socket = runtime / "persistd.sock"
        if socket.exists():
            from conftest import status

            reply = status(str(socket))
            if reply is not None:
                os.kill(reply.pid, 15)
        shutil.rmtree(root, ignore_errors=True)


def test_wheel_in_a_fresh_venv_works_from_any_directory(
    wheel: Path, fresh_user: dict[str, str], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # A fresh venv: no system site-packages, nothing but what pip installs.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # pip of the repo venv installs into it (--python), from PyPI.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
         "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600,
        env=dict(fresh_user, PATH=os.environ["PATH"]),
    )
    assert install.returncode == 0, install.stderr
    project = tmp_path / "project"  # outside the repo
    project.mkdir()
    env = dict(fresh_user, PATH="%s:%s" % (venv / "bin", fresh_user["PATH"]))
    script = (
        "import numpy as np, persistd\n"
        "model = {'w': np.arange(100000, dtype='f4').reshape(100, 1000), 'name': 'm'}\n"
        "assert persistd.dump(model, 'model.pkl', compress='zstd') == 'model.pkl'\n"
        "back = persistd.load('model.pkl', mmap_mode='r')\n"
        "assert back['name'] == 'm' and (back['w'] == model['w']).all()\n"
        "print(persistd.__file__)\n"
    )
    result = subprocess.run([str(python), "-c", script], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(venv))  # the venv's copy, not the repo's
    status = subprocess.run([str(venv / "bin" / "persistctl"), "status", "--json"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    reply = json.loads(status.stdout)
    # The default socket and store of this user, served by the packaged daemon.
    assert reply["socket_path"] == os.path.join(fresh_user["XDG_RUNTIME_DIR"], "persistd.sock")
    assert reply["store_dir"] == os.path.join(fresh_user["HOME"], ".local/share/persistd")
    assert os.readlink("/proc/%d/exe" % reply["pid"]).startswith(str(venv))
    version = subprocess.run([str(venv / "bin" / "persistd"), "--version"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "persistd " + persistd.__version__
    stop = subprocess.run([str(venv / "bin" / "persistctl"), "stop"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr


#: What the packaged daemon may take from the system: glibc.
_GLIBC = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libmvec.so", "libpthread.so",
          "libdl.so", "librt.so", "libresolv.so", "libutil.so", "/lib64/ld-linux")


def _ldd(binary: Path) -> dict[str, str]:
    listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True,
                             env=dict(os.environ, LD_LIBRARY_PATH="")).stdout
    found = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            found[parts[0]] = os.path.normpath(parts[2])
    return found


def test_the_packaged_daemon_runs_without_the_system_libraries(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300)
    [package] = venv.glob("lib/python3*/site-packages/persistd")
    daemon = package / "_bin" / "persistd"
    # Every library but glibc's resolves inside the installed package.
    outside = {name: path for name, path in _ldd(daemon).items()
               if not path.startswith(str(package / "_libs")) and not name.startswith(_GLIBC)}
    assert not outside, outside
    # And it runs where the system's copies are gone: hide them (a private
    # mount namespace, /dev/null bound over each) and start both daemons.
    hidden = sorted({path for name, path in _ldd(Path(daemon_binary())).items()
                     if not name.startswith(_GLIBC)})
    script = "; ".join(["for f in %s; do mount --bind /dev/null $f || exit 99; done" % " ".join(hidden),
                        "%s --version" % daemon, "%s --version" % daemon_binary()])
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                            timeout=60)
    if result.returncode == 99 or "unshare failed" in result.stderr:
        pytest.skip("cannot hide the system's libraries here (needs root and mount "
                    "namespaces): %s" % result.stderr.strip()[-300:])
    assert result.stdout.splitlines()[0] == "persistd " + persistd.__version__, result.stdout + result.stderr
    # The unbundled daemon fails there: the libraries really were hidden.
    assert "error while loading shared libraries" in result.stderr, result.stderr


def test_install_script_installs_the_daemon_and_skips_missing_systemd(
    fresh_user: dict[str, str], tmp_path: Path
) -> None:
    prefix = tmp_path / "bin"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "install.sh"), "--prefix", str(prefix),
         "--binary", os.path.abspath(daemon_binary())],
        env=fresh_user, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    installed = prefix / "persistd"
    assert subprocess.run([str(installed), "--version"], capture_output=True, text=True
                          ).stdout.strip() == "persistd " + persistd.__version__
    unit = Path(fresh_user["HOME"], ".config/systemd/user/persistd.service").read_text()
    assert "ExecStart=%s --socket %%t/persistd.sock" % installed in unit
    # Either it enabled the unit or it said why not; it never fails for that.
    assert "enabled and started" in result.stderr or "no systemd user manager" in result.stderr
