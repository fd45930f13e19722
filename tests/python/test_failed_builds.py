"""A failed segment build ends for everyone (hardening, item 2).

Several clients that load the same bad file at once share one build: each
must get its error, none may hang, a later load must try again, and SIGTERM
must still stop the daemon. Against a real daemon; files crafted by hand
(see hostile.py).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon
from hostile import array_wrapper, proto, zstd_frame
from persistd import load

# 48 MiB of valid BINBYTES8 payload (decoding it takes a moment, long enough
# for the other loads to wait for this build) and then an invalid opcode.
SLOW_BAD = zstd_frame(
    proto(4) + b"\x8e" + (48 << 20).to_bytes(8, "little"), (0x41, 48 << 20), b"\xff."
)


def _load_all(path: Path, n: int, timeout: float) -> list[BaseException | None]:
    """Loads `path` from `n` threads at once; each slot gets the exception
    raised (None if it loaded). Fails if any load is still running after
    `timeout` seconds: a build that never ends for its waiters."""
    results: list[BaseException | None] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            load(path)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "loads still waiting for a failed build"
    return results


def test_concurrent_loads_of_a_bad_file_all_get_its_error(fresh_daemon: Daemon, tmp_path: Path) -> None:
    """Six loads share one failing build: all get its error, in time; a
    later load tries again; a fixed file loads; no partial segment stays."""
    path = tmp_path / "bad.zst"
    path.write_bytes(SLOW_BAD)
    results = _load_all(path, 6, timeout=60)
    for error in results:
        assert isinstance(error, ValueError), error
        assert "unknown opcode 0xff" in str(error)
    # A later load builds again (and fails again) instead of hanging.
    with pytest.raises(ValueError, match="unknown opcode 0xff"):
        load(path)
    # The file fixed in place loads.
    path.write_bytes(zstd_frame(array_wrapper((4,), "f8", np.arange(4.0).tobytes())))
    np.testing.assert_array_equal(load(path), np.arange(4.0))
    # No partial segment survives the failures (the small good one may be
    # built in memory, so at most it is there).
    segments = list(Path(fresh_daemon.store, "segments").glob("*.seg"))
    assert len(segments) <= 1, segments


def test_sigterm_stops_the_daemon_after_failed_builds(fresh_daemon: Daemon, tmp_path: Path) -> None:
    """Failed builds leave nothing that keeps SIGTERM from stopping it."""
    path = tmp_path / "bad.zst"
    path.write_bytes(SLOW_BAD)
    _load_all(path, 4, timeout=60)
    process = fresh_daemon.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert time.monotonic() - started < 15
    assert "stopped" in fresh_daemon.log() or "exiting without them" in fresh_daemon.log()
