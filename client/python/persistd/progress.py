"""Progress of long dumps and loads, counted by the daemon.

Opt-in, because joblib's ``dump``/``load`` print nothing:

- ``dump(..., progress=callback)`` / ``load(..., progress=callback)``:
  ``callback(done, total)`` gets byte counts (from a poller thread while the
  call runs, then ``(total, total)`` from the caller's thread once it
  succeeded). ``progress=True`` draws a bar on stderr.
- ``PERSISTD_PROGRESS=1``: a bar for every call that does not pass
  ``progress`` (``progress=False`` turns it off for one call).

A bar is a single line redrawn in place, tqdm-style, and only on a terminal
(stderr is a tty) and once the call has run 0.5 s: quick calls and logs
stay clean.

The counts are the daemon's, not guesses:

- a dump whose payload is streamed (large arrays, compressed): the daemon
  writes how many payload bytes its encoder has consumed into bytes 8..16
  of the payload memfd's header (``DumpRequest.payload_streamed``); the
  total is the payload's size. Reading it is a memory load.
- a load that builds a segment: ``Status`` lists builds under way by their
  source's (dev, ino), with the source bytes decoded so far; the total is
  the source's size. One small RPC every 0.2 s.

Other calls (small dumps, loads served from the cache, uncompressed
dumps, whose array bytes the client writes itself) report nothing until
the final ``(total, total)``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Optional, Union

from persistd.files import STREAM_CONSUMED_OFFSET

#: ``callback(done, total)``, in bytes.
ProgressCallback = Callable[[int, int], None]
#: What ``dump``/``load`` accept as ``progress``.
Progress = Union[bool, ProgressCallback, None]

#: Environment variable: 1 to show a bar for every dump and load.
PROGRESS_ENV = "PERSISTD_PROGRESS"
#: A bar appears once a call has run this long.
BAR_DELAY_S = 0.5
#: How often a dump's count is read (a pread of 8 bytes).
DUMP_POLL_S = 0.1
#: How often a load's build is looked up (a Status RPC).
LOAD_POLL_S = 0.2

#: A poll: the daemon's count so far, or None when it has none (yet).
Poll = Callable[[], Optional[int]]


def resolve(progress: Progress, label: str, stream: IO[str] | None = None) -> ProgressCallback | None:
    """The callback a call reports to, or None for no progress at all.

    ``label`` names the call on a bar ("dump model.pkl").
    """
    if callable(progress):
        return progress
    if progress is None:
        progress = os.environ.get(PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not progress:
        return None
    out = sys.stderr if stream is None else stream
    if not _isatty(out):
        return None
    return Bar(label, out)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Bar:
    """A one-line bar on a terminal, drawn from the first report after
    ``BAR_DELAY_S``; ``close()`` ends its line. Invariant: ``_drawn`` is
    True once anything was written, and only then does ``close`` write."""

    _WIDTH = 24

    def __init__(self, label: str, stream: IO[str]) -> None:
        self._label = _shorten(label, 40)
        self._stream = stream
        self._started = time.monotonic()
        self._drawn = False
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self._started
        if elapsed < BAR_DELAY_S:
            return
        fraction = min(1.0, done / total) if total > 0 else 1.0
        filled = int(fraction * self._WIDTH)
        rate = done / elapsed if elapsed > 0 else 0.0
        line = "%s %3d%% [%s%s] %s/%s %s/s" % (
            self._label,
            int(fraction * 100),
            "#" * filled,
            "." * (self._WIDTH - filled),
            _size(done),
            _size(total),
            _size(int(rate)),
        )
        if 0 < rate and done < total:
            line += " ETA %ds" % int((total - done) / rate + 0.5)
        with self._lock:
            self._stream.write("\r" + line + "\x1b[K")
            self._stream.flush()
            self._drawn = True

    def close(self) -> None:
        with self._lock:
            if self._drawn:
                self._stream.write("\n")
                self._stream.flush()
                self._drawn = False


def _shorten(label: str, width: int) -> str:
    """``label`` in ``width`` characters: "dump ...the/end/of/the/path"."""
    if len(label) <= width:
        return label
    verb, _, rest = label.partition(" ")
    keep = max(0, width - len(verb) - 4)
    return "%s ...%s" % (verb, rest[len(rest) - keep:] if keep else "")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return "%.1f %s" % (n / scale, unit)
    return "%d B" % n


@contextlib.contextmanager
def watching(report: ProgressCallback | None, poll: Poll, total: int,
             interval: float = DUMP_POLL_S) -> Iterator[None]:
    """Report ``poll()`` to ``report`` every ``interval`` while the body
    runs (only when the count moved), then ``(total, total)`` if the body
    succeeded. No thread at all when ``report`` is None."""
    if report is None:
        yield
        return
    stop = threading.Event()
    last = [-1]

    def run() -> None:
        while not stop.wait(interval):
            try:
                done = poll()
            except Exception:  # noqa: BLE001 - progress must never fail the call
                done = None
            if done is not None and done != last[0]:
                last[0] = done
                report(min(done, total), total)

    thread = threading.Thread(target=run, name="persistd-progress", daemon=True)
    thread.start()
    try:
        yield
        stop.set()
        thread.join()
        if last[0] != total:
            report(total, total)
    finally:
        stop.set()
        thread.join()
        if isinstance(report, Bar):
            report.close()


def payload_consumed(fd: int) -> Poll:
    """The daemon's consumed count in the header of the streamed payload
    memfd ``fd`` (which must stay open while the poll is used). Costs
    nothing until polled."""

    def poll() -> int | None:
        header = os.pread(fd, 8, STREAM_CONSUMED_OFFSET)
        return int(struct.unpack("<Q", header)[0]) if len(header) == 8 else None

    return poll


def build_read(status: Callable[[], Any], fd: int) -> Poll:
    """The source bytes the daemon has decoded while it builds the segment
    of the file open at ``fd`` (which must stay open while the poll is
    used); ``status()`` makes a Status call. Costs nothing until polled."""
    identity: list[tuple[int, int]] = []

    def poll() -> int | None:
        if not identity:
            st = os.fstat(fd)
            identity.append((st.st_dev, st.st_ino))
        dev, ino = identity[0]
        for build in status().builds:
            if build.source.dev == dev and build.source.ino == ino:
                return int(build.read_bytes)
        return None

    return poll
