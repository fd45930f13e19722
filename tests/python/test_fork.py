"""Fork after use: gunicorn and multiprocessing fork a parent that already
talked to the daemon. Each child must open its own channel and session and
never touch the parent's; the parent must keep working.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from persistd import dump, load


def _child(path: str, queue: Any) -> None:
    try:
        value = load(path)
        mapped = load(path, mmap_mode="r")
        dump({"pid": os.getpid()}, path + ".%d" % os.getpid())
        queue.put((os.getpid(), float(value["a"].sum()), float(mapped["a"].sum()), mapped["a"].filename))
    except BaseException as exc:  # report, do not hang the parent
        queue.put((os.getpid(), repr(exc), None, None))


def test_children_load_after_parent_used_the_client(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.pkl")
    value = {"a": np.arange(100000.0), "o": np.array([1, "x"], dtype=object)}
    dump(value, path, compress=3)
    parent_copy = load(path)  # the parent has a channel and an open session
    parent_map = load(path, mmap_mode="r")
    expected = float(value["a"].sum())

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    started = time.monotonic()
    children = [context.Process(target=_child, args=(path, queue)) for _ in range(3)]
    for child in children:
        child.start()
    fork_time = time.monotonic() - started
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0

    assert sorted(r[0] for r in results) == sorted(c.pid for c in children)
    for pid, total, mapped_total, segment in results:
        assert total == expected, total
        assert mapped_total == expected
        assert segment == parent_map["a"].filename  # one decompressed copy for all
        assert load(path + ".%d" % pid) == {"pid": pid}
    assert fork_time < 2.0  # no per-fork stall in gRPC's fork handler

    # The parent's connection and session still work.
    np.testing.assert_array_equal(parent_copy["a"], value["a"])
    np.testing.assert_array_equal(load(path)["a"], value["a"])
    dump(value, path + ".after")


def _grandchild_worker(path: str, queue: Any) -> None:
    load(path)
    context = multiprocessing.get_context("fork")
    inner = context.Queue()
    process = context.Process(target=_child, args=(path, inner))
    process.start()
    queue.put(inner.get(timeout=60)[1])
    process.join(timeout=30)


def test_fork_of_a_fork(tmp_path: Path) -> None:
    path = str(tmp_path / "v.pkl")
    dump({"a": np.ones(10)}, path, compress="lz4")
    load(path)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_grandchild_worker, args=(path, queue))
    process.start()
    assert queue.get(timeout=60) == 10.0
    process.join(timeout=30)
    assert process.exitcode == 0
