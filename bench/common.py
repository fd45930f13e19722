"""Helpers shared by the benchmarks: timing, page touching, PSS, tables."""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """Median wall time of `repeat` calls, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def touch(value: object) -> float:
    """Reads one byte per page of every array in `value` (dicts, lists,
    tuples, objects' __dict__), so a lazily mapped load pays for its pages:
    "if you don't consume it you're cheating"."""
    total = 0.0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, np.ndarray):
            flat = v.reshape(-1).view(np.uint8) if v.flags.c_contiguous else np.ascontiguousarray(v).reshape(-1).view(np.uint8)
            total += float(flat[::PAGE].sum())
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif hasattr(v, "__dict__"):
            stack.extend(vars(v).values())
    return total


def settle(pid: int, quiet_s: float = 0.03, limit_s: float = 10.0) -> None:
    """Waits until process `pid` has used no CPU for `quiet_s` (at most
    `limit_s`): persistd decompresses a compressed dump in the background
    right after it (so its first load is warm), and that work must not be
    billed to whatever the benchmark times next."""
    def cpu_ticks() -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    deadline = time.monotonic() + limit_s
    last = cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_ticks()
        if now == last:
            return
        last = now


def pss_bytes(pid: int) -> int:
    """Proportional set size of `pid` from /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_file_cache(path: str) -> None:
    """Evicts `path` from the page cache (POSIX_FADV_DONTNEED) so a cold
    read really reads; it needs no privileges."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _answers(sock: str) -> bool:
    """True when a daemon answers Status on `sock` (the socket file exists
    a moment before the daemon listens on it)."""
    import grpc
    from persistd._proto import persistd_pb2 as pb
    from persistd._proto import persistd_pb2_grpc as pb_grpc

    if not os.path.exists(sock):
        return False
    with grpc.insecure_channel("unix:" + sock) as channel:
        try:
            pb_grpc.PersistdStub(channel).Status(pb.StatusRequest(), timeout=0.5)
            return True
        except grpc.RpcError:
            return False


@contextlib.contextmanager
def private_daemon(binary: str, cache_bytes: str | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Starts `binary` on a socket in a fresh mode-0700 temp dir (the client
    refuses socket dirs others can write to) with its store beside it, points
    PERSISTD_SOCKET there (the client reads it at its first call, so set it
    before that), and yields (temp dir, daemon process). A benchmark that owns
    its daemon measures this build with an empty cache, and never someone
    else's daemon. Stops the daemon and removes the dir on exit."""
    tmp = tempfile.mkdtemp(prefix="persistd-bench-")  # mkdtemp: mode 0700
    sock = os.path.join(tmp, "persistd.sock")
    args = [binary, "--socket", sock, "--store", os.path.join(tmp, "store")]
    if cache_bytes:
        args += ["--cache-bytes", cache_bytes]
    previous = os.environ.get("PERSISTD_SOCKET")
    os.environ["PERSISTD_SOCKET"] = sock
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(os.path.join(tmp, "persistd.log"), "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not _answers(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(tmp, "persistd.log"), errors="replace") as log:
                    raise RuntimeError("persistd did not start:\n" + log.read()[-2000:])
            time.sleep(0.02)
        yield tmp, proc
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if previous is None:
            os.environ.pop("PERSISTD_SOCKET", None)
        else:
            os.environ["PERSISTD_SOCKET"] = previous
        shutil.rmtree(tmp, ignore_errors=True)
