"""Helpers shared by the benchmarks: timing, page touching, PSS, tables."""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Iterable, Sequence

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
