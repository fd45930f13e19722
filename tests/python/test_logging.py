"""The daemon's log: one file (<store>/persistd.log), timestamped, leveled;
one line per RPC at debug naming the method and the client's pid (from
SO_PEERCRED, not from the request); dumps, loads, builds and evictions at
info naming the source and the client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import persistd
from conftest import Daemon, daemon_binary, running

#: 2026-11-29T20:31:40.846+00:00 debug rpc Dump pid 4242: OK in 1.2 ms (...)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def log_of(daemon: Daemon) -> str:
    """The daemon's log where it keeps it by default: in its store."""
    with open(os.path.join(daemon.store, "persistd.log")) as f:
        return f.read()


@pytest.fixture
def debug_daemon() -> Iterator[Daemon]:
    with running(Daemon(daemon_binary(), extra_args=["--log-level=debug"])) as instance:
        yield instance


def test_one_timestamped_line_per_rpc_with_method_and_pid(
    debug_daemon: Daemon, tmp_path: Path
) -> None:
    target = tmp_path / "model.pkl"
    with persistd.Client(debug_daemon.socket, autostart=False) as client:
        client.dump({"w": np.arange(200_000)}, target, compress="zlib")
        np.testing.assert_array_equal(client.load(target)["w"], np.arange(200_000))
    log = log_of(debug_daemon)
    me = os.getpid()
    for method in ("Dump", "Load"):
        lines = re.findall(
            r"^%s debug rpc %s pid (\d+): OK in [\d.]+ ms \(request \d+(?:\.\d)? [KM]?i?B, "
            r"reply \d+(?:\.\d)? [KM]?i?B\)$" % (STAMP, method),
            log, re.MULTILINE)
        assert lines == [str(me)], log
    # Every line of the file is timestamped and leveled.
    for line in log.splitlines():
        assert re.match(r"^%s (debug|info|warning|error) " % STAMP, line), line


def test_pid_comes_from_the_kernel_for_each_client(debug_daemon: Daemon, tmp_path: Path) -> None:
    """Two processes, two pids: the daemon tells its clients apart by the
    peer credentials of their connections."""
    code = (
        "import sys, numpy as np, persistd, os\n"
        "c = persistd.Client(sys.argv[1], autostart=False)\n"
        "persistd_value = c.load(sys.argv[2])\n"
        "print(os.getpid())\n"
    )
    target = tmp_path / "v.pkl"
    persistd.Client(debug_daemon.socket, autostart=False).dump(
        np.ones(100_000), target, compress="lz4")
    child = subprocess.run([sys.executable, "-c", code, debug_daemon.socket, str(target)],
                           check=True, capture_output=True, text=True)
    child_pid = int(child.stdout)
    log = log_of(debug_daemon)
    assert re.search(r"debug rpc Dump pid %d: OK" % os.getpid(), log), log
    assert re.search(r"debug rpc Load pid %d: OK" % child_pid, log), log


def test_info_names_source_and_client(tmp_path: Path) -> None:
    """At the default level: no RPC lines, but each dump and load with its
    file and client pid."""
    with running(Daemon(daemon_binary())) as instance:
        target = tmp_path / "named.pkl"
        with persistd.Client(instance.socket, autostart=False) as client:
            client.dump(np.arange(300_000), target, compress="lz4")
            client.load(target)
        log = log_of(instance)
    assert " debug " not in log
    me = os.getpid()
    assert re.search(r"^%s info dump %s by pid %d: " % (STAMP, re.escape(str(target)), me),
                     log, re.MULTILINE), log
    assert re.search(r"^%s info load %s by pid %d: " % (STAMP, re.escape(str(target)), me),
                     log, re.MULTILINE), log


def test_bad_level_is_refused_at_once() -> None:
    done = subprocess.run([daemon_binary(), "--log-level", "chatty"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--log-level: 'chatty' is not a log level (debug, info, warning or error)" in done.stderr
    env = dict(os.environ, PERSISTD_LOG_LEVEL="loud")
    done = subprocess.run([daemon_binary(), "--socket", "/nonexistent/s.sock"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert "PERSISTD_LOG_LEVEL='loud'" in done.stderr


def test_startup_errors_reach_stderr_and_the_log(tmp_path: Path) -> None:
    """A second daemon on the same socket fails; whoever started it sees why
    on stderr (autostart quotes it), though the log is a file."""
    first = Daemon(daemon_binary())
    first.start()
    try:
        store = tmp_path / "other-store"
        done = subprocess.run(
            [daemon_binary(), "--socket", first.socket, "--store", str(store)],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert re.search(r"^%s error persistd: .*%s" % (STAMP, re.escape(first.socket)),
                         done.stderr, re.MULTILINE), done.stderr
        with open(store / "persistd.log") as f:
            assert "error persistd: " in f.read()
    finally:
        first.cleanup()


def test_log_file_flag(tmp_path: Path) -> None:
    """--log-file moves the log; the store then has none."""
    log_file = tmp_path / "elsewhere.log"
    with running(Daemon(daemon_binary(), extra_args=["--log-file", str(log_file)])) as instance:
        assert re.search(r"^%s info persistd .*: serving " % STAMP, log_file.read_text(),
                         re.MULTILINE)
        assert not os.path.exists(os.path.join(instance.store, "persistd.log"))
        assert oct(os.stat(log_file).st_mode & 0o777) == "0o600"
