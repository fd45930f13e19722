"""The daemon evicts, on its own, segments whose source file was deleted or
replaced (--sweep-seconds): nobody has to run `persistctl cache evict
--stale` for the store to let go of them."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import persistd.admin
from conftest import Daemon, _require_binary, serving
from persistd import dump, load


@pytest.fixture
def sweeping_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    with serving(Daemon(_require_binary(), extra_args=["--sweep-seconds", "1"]), monkeypatch) as instance:
        yield instance


def sources(daemon: Daemon) -> set[str]:
    return {s["source_path"] for s in persistd.admin.list_segments(daemon.socket) if s["current"]}


def test_segments_of_deleted_and_replaced_files_go_by_themselves(
    sweeping_daemon: Daemon, tmp_path: Path
) -> None:
    noise = np.random.default_rng(0).random(40_000)  # past the inline size: a segment
    kept, deleted, replaced = (str(tmp_path / n) for n in ("kept.pkl", "deleted.pkl", "replaced.pkl"))
    for path in (kept, deleted, replaced):
        dump(noise, path, compress=3)
        np.testing.assert_array_equal(load(path), noise)
    gc.collect()
    assert sources(sweeping_daemon) >= {kept, deleted, replaced}

    os.unlink(deleted)
    dump(noise + 1, replaced + ".new", compress=3)
    os.rename(replaced + ".new", replaced)  # another file at the same path
    deadline = time.monotonic() + 30
    while sources(sweeping_daemon) & {deleted, replaced}:
        assert time.monotonic() < deadline, persistd.admin.list_segments(sweeping_daemon.socket)
        time.sleep(0.1)
    assert kept in sources(sweeping_daemon)
    assert "the file was deleted or replaced" in sweeping_daemon.log()
    np.testing.assert_array_equal(load(replaced), noise + 1)  # a fresh segment
