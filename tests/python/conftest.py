"""Real daemons for the Python suite: no mocks anywhere.

``daemon`` (session scope, autouse) starts the persistd binary once on a
socket under a short temporary directory (Unix socket paths are limited to
108 bytes) and points the client at it through $PERSISTD_SOCKET.
``fresh_daemon`` starts a private one for tests that stop or restart it.
The binary is $PERSISTD_BIN, else bazel-bin/server/persistd of this repo.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "bazel-bin" / "server" / "persistd"


def pytest_configure(config: pytest.Config) -> None:
    # np.matrix is part of what joblib persists; numpy nags about it.
    config.addinivalue_line("filterwarnings", "ignore:the matrix subclass:PendingDeprecationWarning")


def daemon_binary() -> str:
    return os.environ.get("PERSISTD_BIN") or str(DEFAULT_BIN)


def joblib_data_dir() -> Path:
    """The 66 files written by joblib 0.8.4 - 0.12.2 (shared/joblib-data)."""
    explicit = os.environ.get("PERSISTD_JOBLIB_DATA")
    if explicit:
        return Path(explicit)
    return REPO_ROOT.parent / "shared" / "joblib-data"


def status(socket: str, timeout: float = 1.0):  # type: ignore[no-untyped-def]
    """The daemon's Status reply, or None when it does not answer."""
    from persistd._proto import persistd_pb2 as pb
    from persistd._proto import persistd_pb2_grpc as pb_grpc

    with grpc.insecure_channel("unix:" + socket) as channel:
        try:
            return pb_grpc.PersistdStub(channel).Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


class Daemon:
    """One persistd process on its own socket and store."""

    def __init__(
        self, binary: str, cache_bytes: int | None = None, extra_args: list[str] | None = None
    ) -> None:
        self.binary = binary
        self.extra_args = list(extra_args or [])
        self.dir = tempfile.mkdtemp(prefix="pd")
        self.socket = os.path.join(self.dir, "persistd.sock")
        self.store = os.path.join(self.dir, "store")
        # The daemon's log (its default place); its stderr, where errors
        # go until it serves, is kept beside.
        self.log_path = os.path.join(self.store, "persistd.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.cache_bytes = cache_bytes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        args = [self.binary, "--socket", self.socket, "--store", self.store]
        if self.cache_bytes is not None:
            args += ["--cache-bytes", str(self.cache_bytes)]
        args += self.extra_args
        with open(self.stderr_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while status(self.socket, timeout=0.5) is None:
            if self.process.poll() is not None:
                raise RuntimeError("persistd exited with %s:\n%s" % (self.process.returncode, self.log()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("persistd did not answer within %.0f s:\n%s" % (timeout, self.log()))
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self) -> str:
        """The end of the daemon's log, after what it wrote to stderr."""
        text = ""
        for path in (self.stderr_path, self.log_path):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()[-4000:]
            except OSError:
                pass
        return text

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _require_binary() -> str:
    binary = daemon_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(
            "persistd binary not found at %s: build it with `bazel build //server:persistd` "
            "or set PERSISTD_BIN" % binary,
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session", autouse=True)
def daemon() -> Iterator[Daemon]:
    instance = Daemon(_require_binary())
    instance.start()
    previous = os.environ.get("PERSISTD_SOCKET")
    os.environ["PERSISTD_SOCKET"] = instance.socket
    try:
        yield instance
    finally:
        if previous is None:
            os.environ.pop("PERSISTD_SOCKET", None)
        else:
            os.environ["PERSISTD_SOCKET"] = previous
        instance.cleanup()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_goes_idle(daemon: Daemon, within: float = 5.0, what: str = "work nobody wants") -> None:
    """The daemon goes idle (half a second with under 0.05 s of CPU) within
    `within` seconds: it stopped `what`. Tests that use this make that work
    take far longer than `within`, so a daemon that kept at it fails."""
    assert daemon.process is not None
    deadline = time.monotonic() + within
    while True:
        busy_before = cpu_seconds(daemon.process.pid)
        time.sleep(0.5)
        if cpu_seconds(daemon.process.pid) - busy_before < 0.05:
            return
        assert time.monotonic() < deadline, "the daemon kept at " + what


D = TypeVar("D", bound=Daemon)


@contextlib.contextmanager
def running(instance: D) -> Iterator[D]:
    """Starts `instance` for the block; then stops it and removes its files.
    The environment is left alone: only a Client given its socket reaches
    it (see serving)."""
    instance.start()
    try:
        yield instance
    finally:
        instance.cleanup()


@contextlib.contextmanager
def serving(instance: D, monkeypatch: pytest.MonkeyPatch) -> Iterator[D]:
    """Starts `instance` and points the client at it until the block ends
    (the client follows $PERSISTD_SOCKET); then stops it and removes its
    files. For fixtures of daemons with flags or limits of their own."""
    with running(instance):
        monkeypatch.setenv("PERSISTD_SOCKET", instance.socket)
        yield instance


@pytest.fixture
def fresh_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A private daemon the test may stop, kill or restart; the client is
    pointed at it for the test's duration."""
    with serving(Daemon(_require_binary()), monkeypatch) as instance:
        yield instance


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with the cwd in its tmp_path (the spec's examples use
    relative file names)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel a project installs, with the daemon under test inside, built
    once per session for every test that installs it (test_packaging,
    test_python_versions, the end-to-end test) as deploy/build_wheel.sh
    builds it: in pip's isolated build environment, so that the stubs come
    from the pinned grpcio-tools (pyproject.toml) and suit every Python the
    wheel claims. From a copy of the client: another build may be using
    client/python/build."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "client"
    shutil.copytree(REPO_ROOT / "client" / "python", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "_proto"))
    env = dict(os.environ, PERSISTD_WHEEL_DAEMON=os.path.abspath(daemon_binary()),
               PERSISTD_PROTO_DIR=str(REPO_ROOT / "proto"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
         "-w", str(work / "dist"), str(source)],
        check=True, env=env, timeout=600,
    )
    [built] = (work / "dist").glob("persistd-*.whl")
    return built
