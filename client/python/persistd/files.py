"""Files the client opens and creates itself, with its own credentials.

Loads open the source here and pass the descriptor; dumps create an unnamed
temp file beside the target (``O_TMPFILE``), let the daemon write into it,
and publish it here with ``linkat`` + ``rename``. So a dumped file gets
exactly what ``open(filename, "wb")`` would give it: the caller's umask for
a new file, the old file's mode (and, for root, owner) on overwrite, and a
symlink is written through, not replaced. A crash at any point leaves the
target old or new and nothing beside it (an unnamed file vanishes with its
last descriptor); only filesystems without ``O_TMPFILE`` get a named temp
file, removed on every failure path we survive.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

_T = TypeVar("_T")

_TMPFILE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)
#: Largest single write Linux performs (MAX_RW_COUNT).
_MAX_WRITE = 0x7FFFF000


def open_source(filename: str, writable: bool = False) -> int:
    """Opens a file to load, as ``open(filename)`` would (same errors), but
    never blocks on a FIFO and refuses anything but a regular file."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(filename, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(
                "%r is not a regular file (a FIFO, socket or device): persistd "
                "loads files by path only when they are regular; pass a file "
                "object instead, e.g. load(open(%r, 'rb'))" % (filename, filename)
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` (pwrite may write less than asked)."""
    done, total = 0, data.nbytes
    while done < total:
        done += os.pwrite(fd, data[done : done + _MAX_WRITE], offset + done)


class TempTarget:
    """The file a dump writes into, published over ``target`` on success.

    Invariant: until ``publish`` returns, ``target`` is untouched; if the
    object is closed without a publish, no trace of it remains (the unnamed
    file goes with its descriptor, a named fallback is unlinked).
    """

    def __init__(self, filename: str) -> None:
        if filename == "":
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), filename)
        # joblib's open(filename, "wb") writes through a symlink: replace
        # the file it points to and keep the link.
        self.target = os.path.realpath(filename)
        self.directory = os.path.dirname(self.target)
        self.filename = filename
        self._named: str | None = None  # a hidden name in dir_fd, to remove
        try:
            existing: os.stat_result | None = os.stat(self.target)
        except FileNotFoundError:
            existing = None
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), filename) from None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
        # rename() needs only the directory writable; open(filename, "wb")
        # needs the file itself to be.
        if existing is not None and not os.access(self.target, os.W_OK, effective_ids=True):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), filename)
        self._existing = existing
        # Everything below happens relative to this directory descriptor,
        # so a rename of a parent mid-dump cannot redirect the publish.
        self.dir_fd = -1
        self.fd = -1
        try:
            self.dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), filename) from None
        try:
            self.fd = self._create(filename)
        except BaseException:
            self.close()
            raise
        try:
            if existing is not None and stat.S_ISREG(existing.st_mode):
                self._keep_identity(existing)
        except BaseException:
            self.close()
            raise

    def _create(self, filename: str) -> int:
        try:
            return os.open(
                ".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666, dir_fd=self.dir_fd
            )
        except PermissionError as exc:
            raise PermissionError(exc.errno, exc.strerror, filename) from None
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise
        # No O_TMPFILE here (NFS, old overlayfs): a named temp file, never
        # readable by more people than the file it replaces, even briefly.
        mode = 0o666 & (stat.S_IMODE(self._existing.st_mode) if self._existing else 0o666)
        return self._with_temp_name(
            lambda name: os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode,
                dir_fd=self.dir_fd,
            )
        )

    def _with_temp_name(self, create: Callable[[str], _T]) -> _T:
        """``create(name)`` for a fresh hidden name beside the target; the
        name is remembered so every failure path can remove it."""
        base = os.path.basename(self.target)
        for _ in range(100):
            name = ".%s.%s.persistd-tmp" % (base, os.urandom(6).hex())
            try:
                result = create(name)
            except FileExistsError:
                continue
            self._named = name
            return result
        raise FileExistsError(errno.EEXIST, "no free temp name", self.directory)

    def _keep_identity(self, existing: os.stat_result) -> None:
        """An overwrite keeps the old file's mode, and its owner where we
        may set it (root), as truncating it in place would."""
        os.fchmod(self.fd, stat.S_IMODE(existing.st_mode))
        if os.geteuid() == 0:
            os.fchown(self.fd, existing.st_uid, existing.st_gid)

    def publish(self, sync: bool) -> None:
        """Atomically replace the target; with ``sync``, durably."""
        if sync:
            os.fsync(self.fd)
        if self._named is None:
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE
            # without privileges; it refuses existing names, so link under a
            # temp name, then rename over the target (atomic).
            source = "/proc/self/fd/%d" % self.fd
            self._with_temp_name(
                lambda name: os.link(source, name, dst_dir_fd=self.dir_fd, follow_symlinks=True)
            )
        assert self._named is not None
        os.rename(
            self._named, os.path.basename(self.target),
            src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd,
        )
        self._named = None
        if sync:
            os.fsync(self.dir_fd)

    def close(self) -> None:
        if self._named is not None:
            try:
                os.unlink(self._named, dir_fd=self.dir_fd)
            except OSError:
                pass
            self._named = None
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1

    def __enter__(self) -> TempTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def memory_file(name: str, size: int) -> int:
    """An unnamed in-memory file of ``size`` bytes that can be sealed."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    if size:
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
    return fd


def seal(fd: int, writable: bool = False) -> None:
    """Freeze a memory file's size (and, unless ``writable``, its contents)
    before the daemon maps it: without the seals it refuses, since a shrink
    would SIGBUS it."""
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
    if not writable:
        seals |= fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


#: The streamed payload's header: the ready count, the daemon's consumed
#: count, then padding to keep the payload's alignment
#: (proto/persistd.proto, DumpRequest).
STREAM_HEADER_BYTES = 64
#: Where the daemon writes how far it has read (consumed) the payload.
STREAM_CONSUMED_OFFSET = 8


class StreamHeader:
    """The mapped header of a streamed payload memfd: the writer raises the
    ready count (bytes 0..8), the daemon writes its consumed count (bytes
    8..16). ``close()`` unmaps it."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, STREAM_HEADER_BYTES)

    def publish(self, ready: int) -> None:
        struct.pack_into("<Q", self._map, 0, ready)

    def consumed(self) -> int:
        value: int = struct.unpack_from("<Q", self._map, STREAM_CONSUMED_OFFSET)[0]
        return value

    def close(self) -> None:
        self._map.close()
#: Array bytes copied between two raises of the ready count.
_STREAM_CHUNK = 4 << 20


class StreamedPayload:
    """Fills a payload memfd while the daemon compresses it.

    Called as the work to do while the Dump call runs: it writes the
    non-array parts, then each array's bytes in chunks, raising the ready
    count in the header after each, so the daemon's encoder starts on the
    first chunk instead of after the last. Invariant: the count never
    exceeds what is written, and only grows."""

    def __init__(self, fd: int, plan: Any) -> None:
        self._fd = fd
        self._plan = plan
        self._header = StreamHeader(fd)
        plan.write_prefix(self._write)
        self._header.publish(plan.prefix_end())

    def _write(self, offset: int, data: bytes | memoryview) -> None:
        write_at(self._fd, memoryview(data), offset)

    def __call__(self) -> None:
        for part in self._plan.payload_arrays():
            data = part.raw_bytes()
            for start in range(0, data.nbytes, _STREAM_CHUNK):
                chunk = data[start : start + _STREAM_CHUNK]
                self._write(part.data_offset + start, chunk)
                self._header.publish(part.data_offset + start + chunk.nbytes)
        self._header.publish(self._plan.size)

    def __enter__(self) -> StreamedPayload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._header.close()
