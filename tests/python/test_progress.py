"""Progress of long dumps and loads, fed by the daemon's byte counts
(persistd.progress): the callback sees the daemon's counts rise to the
total; the bar shows on a terminal only."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest

import persistd
from conftest import Daemon
from persistd import progress


def low_entropy(nbytes: int) -> np.ndarray:
    """Compressible, but slow to compress well: xz takes seconds for a few
    MiB, so the dump outlives several polls."""
    return np.random.default_rng(7).integers(0, 16, size=nbytes, dtype=np.uint8)


def check_rising_to_total(calls: list[tuple[int, int]]) -> None:
    assert len(calls) >= 2, calls
    dones = [done for done, _ in calls]
    totals = {total for _, total in calls}
    assert len(totals) == 1, calls
    assert dones == sorted(set(dones)), calls  # strictly increasing
    assert calls[-1] == (calls[-1][1], calls[-1][1]), calls  # ends at the total
    assert 0 < dones[0] < calls[-1][1], calls  # a count of the daemon's before the end


def test_dump_reports_the_daemons_consumed_bytes(fresh_daemon: Daemon, tmp_path: Path) -> None:
    data = low_entropy(12 << 20)
    calls: list[tuple[int, int]] = []
    target = tmp_path / "big.pkl"
    persistd.dump(data, target, compress=("xz", 1),
                  progress=lambda done, total: calls.append((done, total)))
    check_rising_to_total(calls)
    # The total is the payload the daemon compressed: the array and a header.
    assert data.nbytes < calls[-1][1] < data.nbytes + (1 << 16)
    np.testing.assert_array_equal(joblib.load(target), data)


def test_load_reports_the_builds_decoded_bytes(fresh_daemon: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "joblib.pkl"
    data = low_entropy(32 << 20)
    # bz2 decodes slowly (~30 MB/s): the build outlives several polls. The
    # daemon has never seen the file, so the load builds its segment.
    joblib.dump(data, source, compress=("bz2", 1))
    calls: list[tuple[int, int]] = []
    loaded = persistd.load(source, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(loaded, data)
    check_rising_to_total(calls)
    assert calls[-1][1] == os.path.getsize(source)  # bytes of the compressed source


def test_no_progress_unless_asked(fresh_daemon: Daemon, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert progress.resolve(None, "dump x") is None
    assert progress.resolve(False, "dump x") is None
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    assert progress.resolve(False, "dump x") is None  # a call's False wins
    assert progress.resolve(None, "dump x", io.StringIO()) is None  # not a terminal

    def callback(done: int, total: int) -> None:
        pass

    assert progress.resolve(callback, "dump x") is callback


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_waits_half_a_second_then_draws_one_line() -> None:
    out = _Terminal()
    bar = progress.resolve(True, "dump model.pkl", out)
    assert isinstance(bar, progress.Bar)
    bar(10, 100)
    assert out.getvalue() == ""  # a quick call prints nothing
    bar._started -= progress.BAR_DELAY_S  # as if it had run that long
    bar(50 << 20, 100 << 20)
    bar(100 << 20, 100 << 20)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "dump model.pkl  50% [############............] 50.0 MiB/100.0 MiB" in text
    assert "dump model.pkl 100% [########################] 100.0 MiB/100.0 MiB" in text


def test_progress_env_draws_a_bar_on_a_terminal(fresh_daemon: Daemon, tmp_path: Path) -> None:
    """PERSISTD_PROGRESS=1 and stderr on a pseudo-terminal: a long dump
    draws the bar, ending at 100%, without any change to the caller."""
    script = textwrap.dedent(
        """
        import sys, numpy as np, persistd
        data = np.random.default_rng(7).integers(0, 16, size=16 << 20, dtype=np.uint8)
        persistd.dump(data, sys.argv[1], compress=("xz", 1))
        """
    )
    leader, follower = pty.openpty()
    env = dict(os.environ, PERSISTD_PROGRESS="1")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "v.pkl")],
                             stderr=follower, env=env)
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        assert ready, "no output and no exit within 120 s"
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert child.wait(timeout=60) == 0, output
    text = output.decode()
    assert "\r" in text and "100% [########################]" in text, text
    assert "dump ...%s" % str(tmp_path / "v.pkl")[-32:] in text, text
