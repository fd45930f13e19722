"""A nearly full store (hardening, item 4).

Segments were preallocated in 64 MiB steps, so an 8 KB load failed with
ENOSPC while 24 MB were free; steps that grow with the segment still
overshot by up to 2x. Now a segment that fits is never refused, and one
that does not gets an error naming the store and the way out. The daemon's
store is a 24 MiB tmpfs (mounting needs root; skipped otherwise).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon, daemon_binary
from hostile import array_wrapper, zstd_frame
from persistd import load

STORE_BYTES = 24 << 20


@pytest.fixture
def small_store_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A daemon whose store is a fresh 24 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    instance = Daemon(daemon_binary())
    os.makedirs(instance.store)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % STORE_BYTES, "tmpfs", instance.store],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % mounted.stderr.decode().strip())
    try:
        instance.start()
        monkeypatch.setenv("PERSISTD_SOCKET", instance.socket)
        yield instance
    finally:
        instance.stop()
        subprocess.run(["umount", "-l", instance.store], check=False)  # lazily: arrays may still map it
        instance.cleanup()


def zeros_file(path: Path, nbytes: int) -> Path:
    """A zstd joblib file of one uint8 array of `nbytes` zeros (a few KB)."""
    header = array_wrapper((nbytes,), "u1", b"")[:-1]  # without its STOP
    path.write_bytes(zstd_frame(header, (0, nbytes), b"."))
    return path


def test_a_segment_that_fits_loads_and_one_that_does_not_names_the_store(
    small_store_daemon: Daemon, tmp_path: Path
) -> None:
    """ENOSPC only when the segment really does not fit, and then an error
    that says where and what to do."""
    # 30 MiB cannot fit in 24: a clear error, naming the store and the flag.
    with pytest.raises(OSError) as raised:
        load(zeros_file(tmp_path / "big.zst", 30 << 20))
    assert raised.value.errno == errno.ENOSPC
    message = str(raised.value)
    assert "no space left in the store " + small_store_daemon.store + "/segments" in message
    assert "--cache-bytes" in message
    # 20 MiB fits in 24 (the failed build left nothing behind), although
    # preallocating in growing steps would ask for 32.
    loaded = load(zeros_file(tmp_path / "fits.zst", 20 << 20))
    assert loaded.shape == (20 << 20,)
    assert not loaded.any()
    # And a small one beside it, with 4 MiB left.
    small = tmp_path / "small.zst"
    small.write_bytes(zstd_frame(array_wrapper((1024,), "f8", np.arange(1024.0).tobytes())))
    np.testing.assert_array_equal(load(small), np.arange(1024.0))
