"""Shared-memory handoff: N processes, one decompressed copy.

Every test here runs several real processes against a real daemon (the
session daemon of conftest.py, or a private one where the daemon's counters
must start at zero). Workers are forked after the parent used the client,
as multiprocessing pools and gunicorn do; "another program" is a separate
``python -c`` process. Memory is measured, never assumed: ΣPSS of the
workers and the daemon from /proc/PID/smaps_rollup.

Covered: several processes map one compressed model and ΣPSS stays near one
copy; 'c' (and mmap_mode=None) writes stay private; 'r+' writes reach an
uncompressed file and are dropped, with joblib's warning, for a compressed
one; kill -9 of a lease holder releases its lease (Status: sessions and
leased_segments); a changed, overwritten or truncated source is seen by the
next load while old mappings stay valid and nobody gets SIGBUS; eviction
never removes a leased segment; array data is 64-byte aligned.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from conftest import Daemon, daemon_binary, status
from persistd import dump, load

CTX = multiprocessing.get_context("fork")
MIB = 1 << 20
#: The model: 48 MiB of float32 plus 16 MiB of int64 (64 MiB in all).
W_COUNT = 48 * MIB // 4
I_COUNT = 16 * MIB // 8
MODEL_BYTES = W_COUNT * 4 + I_COUNT * 8
WORKERS = 4
TIMEOUT = 60.0


# -- the model -------------------------------------------------------------------
def make_model(version: int = 1) -> dict[str, Any]:
    """Compressible (about 2-4x) but every page distinct; `version` changes
    every value, so a stale copy cannot pass a checksum."""
    w = (np.arange(W_COUNT, dtype=np.float32) % 4093) * np.float32(version)
    i = np.arange(I_COUNT, dtype=np.int64) * (3 + version)
    return {"w": w, "i": i, "meta": {"version": version}}


def checksum(value: dict[str, Any]) -> float:
    """Reads every page of both arrays (float64 accumulation is exact here)."""
    return float(value["w"].sum(dtype=np.float64)) + float(value["i"].sum(dtype=np.float64))


def write_model(path: Path, compress: Any, version: int = 1) -> float:
    """Writes the model (lz4 and zlib with real joblib, zstd with persistd:
    joblib has no zstd) and returns its checksum. The arrays are gone from
    the parent before any worker is forked."""
    model = make_model(version)
    expected = checksum(model)
    if compress == "zstd":
        dump(model, path, compress="zstd")
    else:
        joblib.dump(model, path, compress=compress)
    del model
    gc.collect()
    return expected


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- /proc -----------------------------------------------------------------------
def rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in bytes (Rss, Pss, Pss_File, Private_Dirty...)."""
    fields = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def total_pss(pids: list[int]) -> int:
    return sum(rollup(pid)["Pss"] for pid in pids)


# -- process helpers ---------------------------------------------------------------
class Workers:
    """Forked workers that report dicts through one queue."""

    def __init__(self) -> None:
        self.queue: Any = CTX.Queue()
        self.processes: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        process = CTX.Process(target=_guarded, args=(target, self.queue) + args)
        process.start()
        self.processes.append(process)
        return process

    def get(self, count: int = 1) -> list[dict[str, Any]]:
        results = [self.queue.get(timeout=TIMEOUT) for _ in range(count)]
        for result in results:
            assert "error" not in result, result
        return results

    def join(self) -> None:
        for process in self.processes:
            process.join(timeout=TIMEOUT)
            assert process.exitcode == 0, "worker %d exited with %s (-7 is SIGBUS)" % (
                process.pid, process.exitcode)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


@pytest.fixture
def workers() -> Iterator[Workers]:
    group = Workers()
    try:
        yield group
    finally:
        group.kill_all()


def _guarded(target: Callable[..., None], queue: Any, *args: Any) -> None:
    try:
        target(queue, *args)
    except BaseException as exc:  # report instead of hanging the parent
        queue.put({"pid": os.getpid(), "error": repr(exc)})
        raise


def python_process(script: str) -> subprocess.Popen[str]:
    """A separate interpreter (not a fork) running `script`; it inherits
    PERSISTD_SOCKET. It prints lines the parent waits for."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def expect_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(prefix), "expected %r from the child, got %r (exit %s)" % (
        prefix, line, process.poll())
    return line[len(prefix):].strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- 1. several processes map one compressed model ---------------------------------------
def _share_worker(
    queue: Any, path: str, warmup: str, mode: str | None, go: Any, release: Any
) -> None:
    # Channel, session and lazy imports first, so the parent's baseline
    # already includes them and the PSS delta is the model alone.
    load(warmup, mmap_mode=mode)
    gc.collect()
    queue.put({"pid": os.getpid(), "phase": "warm"})
    go.wait(TIMEOUT)
    value = load(path, mmap_mode=mode)
    total = checksum(value)  # touches every page
    arrays = [value["w"], value["i"]]
    queue.put({
        "pid": os.getpid(),
        "checksum": total,
        "version": value["meta"]["version"],
        "misaligned": [address(a) % 64 for a in arrays if address(a) % 64],
        "memmap": [isinstance(a, np.memmap) for a in arrays],
        "writeable": [bool(a.flags.writeable) for a in arrays],
        "files": [getattr(a, "filename", None) for a in arrays],
    })
    release.wait(TIMEOUT)  # hold the model while the parent measures
    del value, arrays


@pytest.mark.parametrize("mode", [None, "r"])
@pytest.mark.parametrize("compress", ["lz4", "zstd", 3])
def test_workers_share_one_decompressed_copy(
    daemon: Daemon, workers: Workers, tmp_path: Path, compress: Any, mode: str | None
) -> None:
    path = tmp_path / "model.pkl"
    expected = write_model(path, compress)
    load(tmp_path / "model.pkl", mmap_mode="r")["meta"]  # noqa: B018 -- the parent uses the client
    gc.collect()
    # A fresh file for the workers: its first load is cold (one build for all).
    cold = tmp_path / "cold.pkl"
    cold.write_bytes(path.read_bytes())
    warmup = tmp_path / "small.pkl"
    joblib.dump({"w": np.arange(1000.0)}, warmup, compress=compress if compress != "zstd" else 0)
    go, release = CTX.Event(), CTX.Event()
    for _ in range(WORKERS):
        workers.start(_share_worker, str(cold), str(warmup), mode, go, release)
    workers.get(WORKERS)  # all warm, waiting at go
    time.sleep(0.1)
    pids = [p.pid for p in workers.processes]
    daemon_pid = daemon.process.pid  # type: ignore[union-attr]
    before_pss = total_pss(pids + [daemon_pid])
    before_rss = {pid: rollup(pid)["Rss"] for pid in pids}
    before = status(daemon.socket)
    go.set()
    results = workers.get(WORKERS)
    after_pss = total_pss(pids + [daemon_pid])
    after_rss = {pid: rollup(pid)["Rss"] for pid in pids}
    after = status(daemon.socket)
    release.set()
    workers.join()

    for result in results:
        assert result["checksum"] == expected
        assert result["version"] == 1
        assert result["misaligned"] == []  # 64-byte aligned in the segment
        assert result["memmap"] == [mode is not None] * 2
        assert result["writeable"] == [mode is None] * 2
    if mode == "r":
        files = {f for r in results for f in r["files"]}
        assert len(files) == 1 and str(cold) not in files  # one segment, not the source
    # Decompressed once: one build, the other workers waited for it.
    assert after.loads - before.loads == WORKERS
    assert after.cache_hits - before.cache_hits == WORKERS - 1
    # Each worker really has the whole model mapped...
    for pid in pids:
        assert after_rss[pid] - before_rss[pid] >= 0.95 * MODEL_BYTES
    # ...and all of them (plus the daemon) hold about one copy, not WORKERS.
    grown = after_pss - before_pss
    assert grown <= 1.3 * MODEL_BYTES, "ΣPSS grew by %.2f x the model" % (grown / MODEL_BYTES)


# -- 2. copy-on-write stays private -------------------------------------------------------
def _writer(queue: Any, path: str, mode: str | None, wrote: Any, checked: Any) -> None:
    value = load(path, mmap_mode=mode)
    w = value["w"]
    dirty_before = rollup(os.getpid())["Private_Dirty"]
    w[:1000] = -1.0
    w[-1] = -1.0
    value["i"][W_COUNT // 1000] = -1
    dirty_grown = rollup(os.getpid())["Private_Dirty"] - dirty_before
    wrote.set()
    checked.wait(TIMEOUT)  # the others looked while our writes exist
    queue.put({
        "pid": os.getpid(),
        "memmap": isinstance(w, np.memmap),
        "mode": getattr(w, "mode", None),
        "kept": bool((w[:1000] == -1).all() and w[-1] == -1),
        "dirty_grown": dirty_grown,
    })


def _reader(queue: Any, path: str, expected: float, wrote: Any) -> None:
    held = load(path, mmap_mode="r")  # mapped before the writes
    held_private = load(path)
    wrote.wait(TIMEOUT)
    queue.put({
        "pid": os.getpid(),
        "held": checksum(held),
        "held_private": checksum(held_private),
        "fresh": [checksum(load(path, mmap_mode=m)) for m in (None, "r", "c")],
    })


@pytest.mark.parametrize("mode", ["c", None])
@pytest.mark.parametrize("compress", ["lz4", 0])
def test_copy_on_write_stays_private(
    workers: Workers, tmp_path: Path, compress: Any, mode: str | None
) -> None:
    path = tmp_path / "model.pkl"
    expected = write_model(path, compress)
    digest = sha256(path)
    load(path)  # the parent used the client; the segment is built
    gc.collect()
    wrote, checked = CTX.Event(), CTX.Event()
    workers.start(_reader, str(path), expected, wrote)
    workers.start(_reader, str(path), expected, wrote)
    time.sleep(0.3)  # readers map before the writer writes
    workers.start(_writer, str(path), mode, wrote, checked)
    readers = [workers.queue.get(timeout=TIMEOUT) for _ in range(2)]
    checked.set()
    (writer,) = workers.get(1)
    workers.join()

    for result in readers:
        assert "error" not in result, result
        assert result["held"] == expected  # a live mapping did not see the writes
        assert result["held_private"] == expected
        assert result["fresh"] == [expected] * 3  # nor did new loads
    assert writer["memmap"] == (mode == "c")
    if mode == "c":
        assert writer["mode"] == "c"
    assert writer["kept"]  # the writer sees its own writes
    # Copy-on-write per page: a few written pages, not a private model copy.
    assert writer["dirty_grown"] < 4 * MIB
    assert sha256(path) == digest
    assert checksum(load(path)) == expected
    if compress != "zstd":
        assert checksum(joblib.load(path)) == expected


# -- 3. 'r+' ---------------------------------------------------------------------------
def _r_plus_writer(queue: Any, path: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = load(path, mmap_mode="r+")
    w = value["w"]
    w[:10] = 7.0
    value["i"][-5:] = 11
    if isinstance(w, np.memmap):
        w.flush()
        value["i"].flush()
    queue.put({
        "pid": os.getpid(),
        "memmap": isinstance(w, np.memmap),
        "mode": getattr(w, "mode", None),
        "filename": getattr(w, "filename", None),
        "warnings": [str(c.message) for c in caught],
    })


def test_r_plus_writes_reach_an_uncompressed_file(workers: Workers, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    expected = write_model(path, 0)
    old = load(path)  # the daemon has a segment of the old content; keep a mapping
    old_mapped = load(path, mmap_mode="r")
    workers.start(_r_plus_writer, str(path))
    (result,) = workers.get(1)
    workers.join()
    assert result["memmap"] and result["mode"] == "r+"
    assert result["filename"] == str(path.resolve())  # the file itself
    assert result["warnings"] == []

    # w[:10] was 0..9 and i[-5:] was 4 * (I_COUNT-5 .. I_COUNT-1) (version 1).
    delta = (10 * 7.0 - 45.0) + sum(11.0 - 4.0 * k for k in range(I_COUNT - 5, I_COUNT))
    # The next load (any mode, any process, and joblib) sees the writes.
    for mode in (None, "r", "c"):
        again = load(path, mmap_mode=mode)
        assert (again["w"][:10] == 7.0).all() and (again["i"][-5:] == 11).all()
        assert checksum(again) == expected + delta
    assert (joblib.load(path)["w"][:10] == 7.0).all()
    # Mappings made before the change stay valid (and keep the old content).
    assert checksum(old) == expected
    assert checksum(old_mapped) == expected


def test_r_plus_on_a_compressed_file_is_a_private_load(workers: Workers, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    expected = write_model(path, "lz4")
    digest = sha256(path)
    workers.start(_r_plus_writer, str(path))
    (result,) = workers.get(1)
    workers.join()
    # Documented decision: joblib's warning and an in-memory (private) load.
    assert result["warnings"] == [
        'mmap_mode "r+" is not compatible with compressed file %s. '
        '"r+" flag will be ignored.' % path
    ]
    assert not result["memmap"]
    assert sha256(path) == digest  # nothing reached the file...
    assert checksum(load(path)) == expected  # ...nor the shared segment
    assert checksum(load(path, mmap_mode="r")) == expected


# -- 4. kill -9 releases leases ------------------------------------------------------------
HOLDER = """
    import sys
    from persistd import load
    path = %r
    mapped = load(path, mmap_mode="r")
    private = load(path)
    print("ready", mapped["w"].filename, flush=True)
    sys.stdin.readline()  # until killed
"""


def test_kill_9_releases_the_lease(fresh_daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    expected = write_model(path, "lz4")
    base = status(fresh_daemon.socket)
    holders = [python_process(HOLDER % str(path)) for _ in range(2)]
    try:
        segments = {expect_line(h, "ready ") for h in holders}
        assert len(segments) == 1  # both map the one segment
        (segment,) = segments
        held = status(fresh_daemon.socket)
        assert held.sessions == base.sessions + 2
        assert held.leased_segments == 1

        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(timeout=10)
        assert wait_for(lambda: status(fresh_daemon.socket).sessions == base.sessions + 1)
        assert status(fresh_daemon.socket).leased_segments == 1  # the other still holds it

        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait(timeout=10)
        assert wait_for(lambda: status(fresh_daemon.socket).sessions == base.sessions)
        assert wait_for(lambda: status(fresh_daemon.socket).leased_segments == 0)
        # Released, not forgotten: the unleased segment stays cached.
        after = status(fresh_daemon.socket)
        assert after.segments == 1 and os.path.exists(segment)
        value = load(path)
        assert checksum(value) == expected
        assert status(fresh_daemon.socket).cache_hits == after.cache_hits + 1
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait()


def test_eviction_spares_leased_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cache-bytes below two models: loading others evicts unleased
    segments only; a leased one stays on disk for its holder."""
    instance = Daemon(daemon_binary(), cache_bytes=int(1.5 * MODEL_BYTES))
    instance.start()
    monkeypatch.setenv("PERSISTD_SOCKET", instance.socket)
    holder = None
    try:
        paths = [tmp_path / ("m%d.pkl" % k) for k in range(3)]
        sums = [write_model(p, "lz4", version=k + 1) for k, p in enumerate(paths)]
        holder = python_process(HOLDER % str(paths[0]))
        held_segment = expect_line(holder, "ready ")
        for p, expected in zip(paths[1:], sums[1:]):
            value = load(p)
            assert checksum(value) == expected
            del value
            gc.collect()
        dump(0, tmp_path / "ping.pkl")  # flushes our releases
        reply = status(instance.socket)
        assert reply.evictions >= 1
        assert os.path.exists(held_segment)  # leased: never evicted
        assert reply.leased_segments == 1
        assert reply.cache_bytes <= reply.cache_budget_bytes + MODEL_BYTES + MIB
        holder.kill()
        holder.wait()
        # Once released it is the least recently used and goes first.
        assert wait_for(lambda: status(instance.socket).leased_segments == 0)
        assert checksum(load(paths[1])) == sums[1]
        assert wait_for(lambda: not os.path.exists(held_segment))
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()
        instance.cleanup()


# -- 5. the source changes under live mappings ------------------------------------------------
def _holder(queue: Any, path: str, expected: float, changed: Any) -> None:
    mapped = load(path, mmap_mode="r")
    private = load(path)
    cow = load(path, mmap_mode="c")
    queue.put({"pid": os.getpid(), "phase": "loaded"})
    changed.wait(TIMEOUT)
    # Every page again, after the source was replaced, overwritten and
    # truncated: a SIGBUS here would kill the worker (exit code -7).
    queue.put({
        "pid": os.getpid(),
        "phase": "after",
        "sums": [checksum(v) for v in (mapped, private, cow)],
    })


def _fresh_loader(queue: Any, path: str) -> None:
    value = load(path)
    queue.put({"pid": os.getpid(), "sum": checksum(value), "version": value["meta"]["version"]})


OVERWRITER = """
    import shutil, sys
    # Another program rewrites the file in place (same inode), then truncates it.
    if sys.argv[1] == "overwrite":
        with open(sys.argv[2], "rb") as src, open(sys.argv[3], "r+b") as dst:
            dst.truncate(0)
            shutil.copyfileobj(src, dst)
    else:
        with open(sys.argv[3], "r+b") as dst:
            dst.truncate(int(sys.argv[2]))
"""


def run_other_program(*args: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(OVERWRITER), *args],
                   check=True, timeout=TIMEOUT)


@pytest.mark.parametrize("compress", ["lz4", 0])
def test_source_changes_under_live_mappings(
    workers: Workers, tmp_path: Path, compress: Any
) -> None:
    path = tmp_path / "model.pkl"
    v1 = write_model(path, compress, version=1)
    changed = CTX.Event()
    workers.start(_holder, str(path), v1, changed)
    assert workers.get(1)[0]["phase"] == "loaded"

    # (a) replaced atomically by persistd (new inode)
    v2_value = make_model(version=2)
    v2 = checksum(v2_value)
    dump(v2_value, path, compress=compress)
    del v2_value
    workers.start(_fresh_loader, str(path))
    (fresh,) = workers.get(1)
    assert (fresh["version"], fresh["sum"]) == (2, v2)
    assert checksum(load(path, mmap_mode="r")) == v2

    # (b) overwritten in place by another program (same inode; for the
    # uncompressed file also the same size: only the timestamps differ)
    other = tmp_path / "v3.pkl"
    v3 = write_model(other, compress, version=3)
    inode = path.stat().st_ino
    run_other_program("overwrite", str(other), str(path))
    assert path.stat().st_ino == inode
    workers.start(_fresh_loader, str(path))
    (fresh,) = workers.get(1)
    assert (fresh["version"], fresh["sum"]) == (3, v3)
    assert checksum(load(path)) == v3

    # (c) truncated in place: the next load fails cleanly, nobody crashes
    run_other_program("truncate", str(path.stat().st_size // 2), str(path))
    with pytest.raises(Exception) as info:
        checksum(load(path))
    assert not isinstance(info.value, (SystemExit, KeyboardInterrupt))

    changed.set()
    (after,) = workers.get(1)
    assert after["phase"] == "after"
    assert after["sums"] == [v1, v1, v1]  # old mappings: valid, old content
    workers.join()  # exit code 0: no SIGBUS
