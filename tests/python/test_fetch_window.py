"""A fetcher paces its ranged reads by how far the daemon has read.

The store may be far faster than decompression: the fetcher then must not
pour the whole object into the staging memfd. The daemon writes its read
position into bytes 8..16 of the staging header (the remote tests run that
end to end against a real daemon and a real S3 server); here a reader
thread plays the daemon's part at a known pace, so the window can be
checked exactly, range by range.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any

import pytest

from persistd.fetch import RangedFetch
from persistd.files import STREAM_HEADER_BYTES, memory_file

SIZE = 40 << 20
CHUNK = 1 << 20
WINDOW = 64 << 20  # fetch.WINDOW_BYTES, the smallest window a fetch uses


class Store:
    """An in-memory object whose ranged reads record how far ahead of the
    reader each one reached."""

    def __init__(self, fd: int) -> None:
        self.data = os.urandom(SIZE)
        self.fd = fd
        self.ahead: list[int] = []

    def read_position(self) -> int:
        return int(struct.unpack("<Q", os.pread(self.fd, 8, 8))[0])

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        self.ahead.append(STREAM_HEADER_BYTES + end - self.read_position())
        return self.data[start:end]


def reader(fd: int, stop: threading.Event, step: int, pause: float) -> None:
    """The daemon's part: reads on behind the ready count, `step` bytes per
    `pause`, and says how far it has read."""
    position = STREAM_HEADER_BYTES
    while not stop.is_set() and position < STREAM_HEADER_BYTES + SIZE:
        ready = int(struct.unpack("<Q", os.pread(fd, 8, 0))[0])
        if ready > position:
            position = min(ready, position + step)
            os.pwrite(fd, struct.pack("<Q", position), 8)
        time.sleep(pause)


@pytest.mark.parametrize("window", [WINDOW // 8, WINDOW])
def test_ranges_stay_within_the_window_of_a_slow_reader(window: int, monkeypatch: Any) -> None:
    monkeypatch.setattr("persistd.fetch.WINDOW_BYTES", window)
    fd = memory_file("test-fetch", STREAM_HEADER_BYTES + SIZE)
    try:
        store = Store(fd)
        stop = threading.Event()
        slow = threading.Thread(target=reader, args=(fd, stop, 256 << 10, 0.002))
        slow.start()
        try:
            RangedFetch(store, "k", "mem://k", SIZE, fd, streamed=True, verify=lambda: None,
                        chunk=CHUNK, parallel=4)()
        finally:
            stop.set()
            slow.join()
        # max(window, 2 x ranges in flight): 8 MiB here when asked for less.
        allowed = max(window, 2 * 4 * CHUNK)
        assert max(store.ahead) <= allowed
        if window < SIZE:
            assert max(store.ahead) > allowed - 2 * CHUNK  # it did use the window
        assert os.pread(fd, SIZE, STREAM_HEADER_BYTES) == store.data
        assert struct.unpack("<Q", os.pread(fd, 8, 0))[0] == STREAM_HEADER_BYTES + SIZE
    finally:
        os.close(fd)


def test_a_call_that_ends_stops_the_wait(monkeypatch: Any) -> None:
    """A daemon that stops reading (its call failed) does not hang the
    fetcher: once the window is full it waits only until the call is over,
    and publishes nothing more."""
    monkeypatch.setattr("persistd.fetch.WINDOW_BYTES", 8 << 20)
    fd = memory_file("test-fetch", STREAM_HEADER_BYTES + SIZE)
    try:
        store = Store(fd)
        ended = threading.Event()
        timer = threading.Timer(0.3, ended.set)
        timer.start()
        RangedFetch(store, "k", "mem://k", SIZE, fd, streamed=True, verify=lambda: None,
                    chunk=CHUNK, parallel=2)(ended.is_set)
        timer.join()
        assert len(store.ahead) * CHUNK <= 8 << 20  # the window, never more
        (ready,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        assert ready <= STREAM_HEADER_BYTES + (8 << 20) < STREAM_HEADER_BYTES + SIZE
    finally:
        os.close(fd)
