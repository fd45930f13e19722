"""persistctl (= python -m persistd) against real daemons, and the daemon's
own command line: --version, --help, sizes in the environment."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistd

from conftest import Daemon, daemon_binary, status
from persistd._proto import persistd_pb2 as pb
from persistd import dump, load
from persistd.cli import main as persistctl


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = persistctl(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def noise(*shape: int) -> np.ndarray:
    """Incompressible: files of these stay above the 64 KiB below which a
    load travels inline (no segment, no lease)."""
    return np.random.default_rng(len(shape)).random(shape)


def segments_of(capsys: pytest.CaptureFixture[str], path: Path) -> list[dict[str, Any]]:
    return [s for s in run_json(capsys, "cache", "ls") if s["source_path"] == str(path)]


# -- status -----------------------------------------------------------------------
def test_status_table_and_json(fresh_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "%s (protocol %d)" % (persistd.__version__, pb.PROTOCOL_CURRENT) in out
    assert fresh_daemon.socket in out and fresh_daemon.store in out
    reply = run_json(capsys, "status")
    assert reply["socket_path"] == fresh_daemon.socket
    assert reply["pid"] == fresh_daemon.process.pid  # type: ignore[union-attr]
    assert isinstance(reply["cache_budget_bytes"], int)
    # One log, in the store by default.
    assert reply["log_file"] == os.path.join(fresh_daemon.store, "persistd.log")
    assert "log        %s (level info)" % reply["log_file"] in out


_HOLDER = """
import sys, persistd
values = [persistd.load(path) for path in sys.argv[1:]]  # leases held while alive
print("ready", flush=True)
sys.stdin.read()
"""


def test_status_lists_each_client_pid_with_its_leases(
    fresh_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two processes hold loads; status names both by the pid the kernel
    gives for their connections, with their leases and leased bytes."""
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    dump(noise(300, 300), a, compress="lz4")
    dump(noise(200, 200), b, compress="zlib")
    holders = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, *files], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for files in ([str(a)], [str(a), str(b)])
    ]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        clients = {c["pid"]: c for c in run_json(capsys, "status")["clients"]}
        one, two = (clients[h.pid] for h in holders)
        assert (one["leases"], one["segments"]) == (1, 1)
        assert (two["leases"], two["segments"]) == (2, 2)
        assert two["segment_bytes"] > one["segment_bytes"] >= 300 * 300 * 8
        assert one["client"].startswith("python/")
        code, out, _ = run(capsys, "status")
        assert code == 0
        table = out[out.index("PID"):].splitlines()
        assert table[0].split() == ["PID", "SESSION", "CLIENT", "LEASES", "SEGMENTS",
                                    "LEASED", "AGE"]
        rows = {int(line.split()[0]): line.split() for line in table[1:]}
        assert rows[holders[0].pid][3:5] == ["1", "1"]
        assert rows[holders[1].pid][3:5] == ["2", "2"]
    finally:
        for holder in holders:
            holder.communicate("", timeout=30)
    # Their sessions end with them (once the daemon sees the streams close).
    gone = {h.pid for h in holders}
    deadline = time.monotonic() + 30
    while any(c["pid"] in gone for c in run_json(capsys, "status")["clients"]):
        assert time.monotonic() < deadline, "sessions outlived their processes"
        time.sleep(0.05)


def test_status_of_no_daemon_fails_and_starts_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    socket = str(run_dir / "persistd.sock")
    code, _, err = run(capsys, "--socket", socket, "status")
    assert code == 1
    assert "persistd is not running at %s" % socket in err
    assert not os.path.exists(socket)


def test_python_m_persistd_is_persistctl(fresh_daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "persistd", "status", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["socket_path"] == fresh_daemon.socket
    usage = subprocess.run(
        [sys.executable, "-m", "persistd", "--help"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 0 and "cache" in usage.stdout and "``" not in usage.stdout


# -- cache ls / evict ---------------------------------------------------------------
def test_cache_ls_shows_source_codec_sizes_and_leases(
    fresh_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "model.pkl"
    dump({"w": noise(300, 300)}, target, compress="lz4")
    held = load(target)
    [info] = segments_of(capsys, target)
    assert info["codec"] == "CODEC_LZ4"
    assert info["source_bytes"] == target.stat().st_size
    assert info["segment_bytes"] >= 300 * 300 * 8
    assert info["leases"] == 1 and info["current"]
    assert info["source_state"] == "SOURCE_CURRENT"
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0
    line = next(line for line in out.splitlines() if str(target) in line)
    assert "lz4" in line and "current" in line
    del held
    gc.collect()
    again = load(target)  # the next call sends the release, and leases anew
    assert segments_of(capsys, target)[0]["leases"] == 1
    del again


def test_cache_evict_stale_takes_deleted_and_changed_sources_only(
    fresh_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept, deleted, changed = tmp_path / "kept.pkl", tmp_path / "deleted.pkl", tmp_path / "changed.pkl"
    for path in (kept, deleted, changed):
        dump(noise(20_000), path, compress=3)
        load(path)
    dump(noise(20_000) + 1, changed, compress=3)  # a new file at the same path
    load(changed)  # its segment (the dump's warm-up may still be building it)
    deleted.unlink()  # after: the new file could reuse its inode number
    states: dict[str, set[str]] = {}
    for info in run_json(capsys, "cache", "ls"):
        states.setdefault(info["source_path"], set()).add(info["source_state"])
    assert states[str(kept)] == {"SOURCE_CURRENT"}
    assert states[str(deleted)] == {"SOURCE_MISSING"}
    # The old version's segment, and the new one's.
    assert states[str(changed)] == {"SOURCE_CHANGED", "SOURCE_CURRENT"}
    code, out, _ = run(capsys, "cache", "evict", "--stale")
    assert code == 0
    assert "evicted %s" % deleted in out and "evicted %s" % changed in out
    assert str(kept) not in out
    left = [(s["source_path"], s["source_state"]) for s in run_json(capsys, "cache", "ls")]
    assert sorted(left) == [(str(changed), "SOURCE_CURRENT"), (str(kept), "SOURCE_CURRENT")]


def test_cache_evict_path_and_all(
    fresh_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dump(noise(20_000), "relative.pkl", compress=3)
    load("relative.pkl")  # recorded under the name it was loaded by
    other = tmp_path / "other.pkl"
    dump(noise(20_000), other, compress=3)
    held = load(other)
    # A file is found by its identity, whatever name it was loaded by.
    reply = run_json(capsys, "cache", "evict", str(tmp_path / "relative.pkl"))
    assert reply["evicted"] == 1 and reply["source_paths"] == ["relative.pkl"]
    assert reply["freed_bytes"] > 0
    # A leased segment stops being served; its file goes with the lease.
    reply = run_json(capsys, "cache", "evict", "--all")
    assert reply["evicted"] == 1 and reply["pending"] == 1
    [retired] = [s for s in run_json(capsys, "cache", "ls") if s["source_path"] == str(other)]
    assert not retired["current"] and os.path.exists(retired["segment_path"])
    np.testing.assert_array_equal(held, noise(20_000))  # still mapped, still valid
    np.testing.assert_array_equal(load(other), held)  # rebuilt
    code, _, err = run(capsys, "cache", "evict")
    assert code == 2 and "--stale" in err


def test_segment_file_removed_by_hand_is_rebuilt(
    fresh_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "v.pkl"
    dump({"a": np.arange(50_000.0)}, target, compress=3)
    load(target)
    [info] = segments_of(capsys, target)
    os.unlink(info["segment_path"])
    np.testing.assert_array_equal(load(target)["a"], np.arange(50_000.0))
    np.testing.assert_array_equal(load(target, mmap_mode="r")["a"], np.arange(50_000.0))


# -- verify -------------------------------------------------------------------------
def test_verify_reports_arrays_with_checksums(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = np.arange(12, dtype="<i4").reshape(3, 4)
    f = np.asfortranarray(np.linspace(0, 1, 30).reshape(5, 6))
    target = tmp_path / "m.pkl"
    dump({"c": c, "f": f, "o": np.array(["x", None], dtype=object)}, target, compress="zstd")
    report = run_json(capsys, "verify", str(target))
    assert report["codec"] == "zstd" and report["format"] == "joblib" and report["ok"]
    raw = [a for a in report["arrays"] if a["kind"] == "raw"]
    assert [(a["dtype"], a["shape"], a["order"]) for a in raw] == [
        ("<i4", [3, 4], "C"), ("<f8", [5, 6], "F")]
    assert raw[0]["crc32"] == "%08x" % zlib.crc32(c.tobytes(order="C"))
    assert raw[1]["crc32"] == "%08x" % zlib.crc32(f.tobytes(order="F"))
    assert [a["kind"] for a in report["arrays"]].count("object") == 1
    code, out, _ = run(capsys, "verify", str(target))
    assert code == 0 and "3 arrays: ok" in out and "<f8" in out


def test_verify_of_a_corrupt_file_fails_with_the_load_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "bad.pkl"
    dump(np.arange(100_000.0), target, compress="zlib")
    data = bytearray(target.read_bytes())
    target.write_bytes(bytes(data[: len(data) // 2]))
    code, _, err = run(capsys, "verify", str(target))
    assert code == 1 and "persistctl:" in err and str(target) in err


# -- stop ---------------------------------------------------------------------------
def test_stop_terminates_the_daemon(fresh_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    pid = fresh_daemon.process.pid  # type: ignore[union-attr]
    code, out, _ = run(capsys, "stop")
    assert code == 0 and "persistd (pid %d) stopped" % pid in out
    assert fresh_daemon.process.wait(timeout=5) == 0  # type: ignore[union-attr]
    assert status(fresh_daemon.socket) is None


# -- the daemon's command line ---------------------------------------------------------
def test_daemon_version_and_plain_help() -> None:
    version = subprocess.run([daemon_binary(), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == "persistd " + persistd.__version__
    usage = subprocess.run([daemon_binary(), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0
    assert "--cache-bytes" in usage.stdout and "``" not in usage.stdout and ".. " not in usage.stdout


def test_cache_bytes_variable_takes_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTD_CACHE_BYTES", "150M")
    daemon = Daemon(daemon_binary())
    try:
        daemon.start()
        reply = status(daemon.socket)
        assert reply is not None and reply.cache_budget_bytes == 150 << 20
    finally:
        daemon.cleanup()
    monkeypatch.setenv("PERSISTD_CACHE_BYTES", "150MB")
    bad = subprocess.run(
        [daemon_binary(), "--socket", str(tmp_path / "s.sock"), "--store", str(tmp_path / "st")],
        capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode == 2
    assert "PERSISTD_CACHE_BYTES='150MB' is not a size" in bad.stderr
