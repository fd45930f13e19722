"""Parallel ranged reads of one object-store object into a staging file.

The node's daemon decompresses a remote object while it arrives: this
process (the object's one fetcher on the node) reads it with a few ranged
reads at a time, ``pwrite``s each range at its place in the staging memfd,
and raises the streamed-payload header's ready count over the contiguous
prefix (the header of ``files.StreamedPayload``, which the daemon also
waits on for dumps). Ranges land out of order; the count only grows, and
never covers a byte not yet written.

Memory: at most ``parallel`` ranges of ``chunk`` bytes are in flight in
Python (32 MiB by default); the object as a whole is never held in a
Python buffer. The daemon releases the staging pages it has decoded and
writes how far it has read into the header (bytes 8..16); a range is
requested only while it ends within ``WINDOW_BYTES`` of that, so however
much faster the store is than decompression, staging holds a bounded
window of the object, not all of it.

The object's last byte is published only after ``verify`` confirmed that
the store still reports the version this fetch was for, so the daemon
never keeps a segment built from bytes of two versions.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from persistd.files import STREAM_HEADER_BYTES, StreamHeader, write_at

#: Bytes per ranged read, and ranged reads in flight.
CHUNK_BYTES = 8 << 20
PARALLEL = 4
#: How far past the daemon's read position ranges may reach. Deadlock-free
#: as long as it exceeds the ranges in flight (PARALLEL x CHUNK_BYTES) plus
#: the daemon's read-ahead (2 MiB): when no range is in flight, every landed
#: byte is published, so the daemon can read on.
WINDOW_BYTES = 64 << 20


class _CallEnded(Exception):
    """The daemon's call ended while the fetch waited for it to read on:
    nobody will consume more, and the call's result says why."""


class RangedFetch:
    """Fetches ``size`` bytes of ``path`` on ``fs`` into ``fd`` at ``base``.

    Called as the work to do while the daemon builds (``__call__``). With
    ``streamed`` the descriptor is a staging memfd whose first 8 bytes are
    the ready count (``base`` is then ``STREAM_HEADER_BYTES``).

    Invariant: ``_prefix`` bytes from the object's start are written, and
    the published count never exceeds ``base + _prefix``.
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        url: str,
        size: int,
        fd: int,
        *,
        streamed: bool,
        verify: Callable[[], None],
        chunk: int | None = None,
        parallel: int | None = None,
    ) -> None:
        self._fs = fs
        self._path = path
        self._url = url
        self._size = size
        self._fd = fd
        self._base = STREAM_HEADER_BYTES if streamed else 0
        self._header = StreamHeader(fd) if streamed else None
        self._verify = verify
        self._chunk = max(1, chunk or CHUNK_BYTES)
        self._parallel = max(1, parallel or PARALLEL)
        self._window = max(WINDOW_BYTES, 2 * self._parallel * self._chunk)
        self._prefix = 0
        self._next = 0  # the start of the next range to request

    def __call__(self, call_ended: Callable[[], bool] = lambda: False) -> None:
        """Fetches while the daemon's call runs; ``call_ended`` tells when it
        is over (then nobody reads on, and the call's result says why)."""
        try:
            self._fetch(call_ended)
            self._verify()
            self._publish(self._size)
        except _CallEnded:
            pass
        finally:
            if self._header is not None:
                self._header.close()
                self._header = None

    def _fetch(self, call_ended: Callable[[], bool]) -> None:
        landed: dict[int, int] = {}  # start -> end of ranges past the prefix
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="persistd-fetch") as pool:
            pending: dict[Future[int], int] = {}
            try:
                while True:
                    while (
                        len(pending) < self._parallel
                        and self._next < self._size
                        and self._within_window(self._next)
                    ):
                        end = min(self._next + self._chunk, self._size)
                        pending[pool.submit(self._read_range, self._next, end)] = self._next
                        self._next = end
                    if not pending:
                        if self._next >= self._size:
                            return
                        self._await_reads(call_ended)
                        continue
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        landed[pending.pop(future)] = future.result()
                    while self._prefix in landed:
                        self._prefix = landed.pop(self._prefix)
                    # The last byte waits for verify().
                    self._publish(min(self._prefix, self._size - 1))
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    def _within_window(self, start: int) -> bool:
        """Whether the range at ``start`` ends within the window past the
        daemon's read position (always, without a header to pace by)."""
        if self._header is None:
            return True
        read = self._header.consumed()
        return self._base + min(start + self._chunk, self._size) <= read + self._window

    def _await_reads(self, call_ended: Callable[[], bool]) -> None:
        """Waits for the daemon to read on (everything landed is published)."""
        pause = 0.0005
        while not self._within_window(self._next):
            if call_ended():
                raise _CallEnded()
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def _read_range(self, start: int, end: int) -> int:
        try:
            data = self._fs.cat_file(self._path, start=start, end=end)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                "%s was deleted while persistd fetched it (at byte %d of %d)"
                % (self._url, start, self._size),
                self._url,
            ) from None
        except OSError as exc:  # e.g. a range past a new, shorter end: 416
            # A refused range most often means the object changed under the
            # fetch (which range fails first depends on the reads in
            # flight): when it did, verify() says so, as a short read does.
            self._verify()
            raise OSError(
                exc.errno or errno.EIO,
                "%s: reading bytes %d-%d of %d failed (%s); if it changed meanwhile, "
                "load it again" % (self._url, start, end, self._size, exc),
                self._url,
            ) from exc
        if len(data) != end - start:
            raise OSError(
                errno.ESTALE,
                "%s changed while persistd fetched it: it ends at byte %d, not %d "
                "(truncated or rewritten); load it again"
                % (self._url, start + len(data), self._size),
                self._url,
            )
        write_at(self._fd, memoryview(data), self._base + start)
        return end

    def _publish(self, done: int) -> None:
        if self._header is not None:
            self._header.publish(self._base + done)
