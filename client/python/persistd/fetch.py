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
Python buffer, and the daemon releases the staging pages it has decoded.

The object's last byte is published only after ``verify`` confirmed that
the store still reports the version this fetch was for, so the daemon
never keeps a segment built from bytes of two versions.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from persistd.files import STREAM_HEADER_BYTES, write_at

#: Bytes per ranged read, and ranged reads in flight.
CHUNK_BYTES = 8 << 20
PARALLEL = 4


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
        self._header = mmap.mmap(fd, STREAM_HEADER_BYTES) if streamed else None
        self._verify = verify
        self._chunk = max(1, chunk or CHUNK_BYTES)
        self._parallel = max(1, parallel or PARALLEL)
        self._prefix = 0

    def __call__(self) -> None:
        try:
            self._fetch()
            self._verify()
            self._publish(self._size)
        finally:
            if self._header is not None:
                self._header.close()
                self._header = None

    def _fetch(self) -> None:
        starts = iter(range(0, self._size, self._chunk))
        landed: dict[int, int] = {}  # start -> end of ranges past the prefix
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="persistd-fetch") as pool:
            pending: dict[Future[int], int] = {}

            def submit() -> None:
                start = next(starts, None)
                if start is not None:
                    end = min(start + self._chunk, self._size)
                    pending[pool.submit(self._read_range, start, end)] = start

            try:
                for _ in range(self._parallel):
                    submit()
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        start = pending.pop(future)
                        landed[start] = future.result()
                        submit()
                    while self._prefix in landed:
                        self._prefix = landed.pop(self._prefix)
                    # The last byte waits for verify().
                    self._publish(min(self._prefix, self._size - 1))
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

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
        except OSError as exc:  # e.g. a range past the end: 416
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
            struct.pack_into("<Q", self._header, 0, self._base + done)
