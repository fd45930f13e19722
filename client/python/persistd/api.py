"""``dump`` and ``load`` for one daemon: joblib's checks and messages.

``persistd.Client.dump``/``load`` (and the module-level functions, through
the default client) call these with the client's ``transport.Endpoint``.
Arguments are validated here, in joblib's order and with joblib's texts,
before anything reaches the daemon; the work itself is in ``pickling``
(dump), ``unpickling`` (load) and ``transport`` (the daemon).

Differences from joblib 1.6 that the persistd spec asks for: ``dump``
returns the filename as a str (joblib: ``[filename]``); ``protocol=None``
means ``pickle.HIGHEST_PROTOCOL`` (joblib: DEFAULT_PROTOCOL); a bad protocol
is refused before anything is written; the file is written atomically; and
``mmap_mode='r'``/``'c'`` memory-maps arrays of compressed files too (from
the daemon's shared decompressed segment) instead of warning and loading
them in memory.
"""

from __future__ import annotations

import io
import operator
import os
import pickle
import select
import stat
import weakref
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, Literal, Optional, Tuple, Union

from persistd import progress, remote, transport
from persistd._proto import persistd_pb2 as pb
from persistd.compression import check_compress, resolve_compress
from persistd.files import (
    STREAM_HEADER_BYTES,
    StreamedPayload,
    TempTarget,
    memory_file,
    open_source,
    seal,
    write_at,
)
from persistd.pickling import plan_dump
from persistd.safety import allowlist
from persistd.unpickling import Loader, warn

# The public argument types (runtime expressions: Python 3.9 has no ``X | Y``).
#: ``compress``: 0/False, True, a zlib level 0-9, a method name, or (method, level).
Compress = Union[bool, int, str, Tuple[str, int]]
#: Where ``dump`` writes: a path, or a binary file object open for writing.
FileTarget = Union[str, "os.PathLike[str]", BinaryIO]
#: What ``load`` reads: a path (str, bytes, PathLike), or a binary file object.
FileSource = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", BinaryIO]
#: ``mmap_mode``: numpy.memmap's modes ('w+' means 'r+', as in joblib).
MmapMode = Optional[Literal["r+", "r", "w+", "c"]]

_MMAP_MODES = ("r", "c", "r+", "w+")
#: numpy.memmap's long spellings of the modes.
_MMAP_MODE_ALIASES = {
    "readonly": "r",
    "copyonwrite": "c",
    "readwrite": "r+",
    "write": "w+",
}
_COPY_CHUNK = 1 << 20
#: Sources up to this size travel inside the Load request, and dump
#: payloads inside the Dump request: below it one message is cheaper than
#: passing a descriptor (and, on load, than mapping a segment).
INLINE_SOURCE_BYTES = 64 << 10
INLINE_PAYLOAD_BYTES = 1 << 20
#: How long a stream that trickles in may pause before it is tried again.
_STREAM_WAIT_S = 0.1
#: Bytes read past a value from a file object that cannot seek back (a
#: socket): the next ``load`` of that object starts with them.
_unread: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def dump(
    endpoint: transport.Endpoint,
    value: Any,
    filename: FileTarget,
    compress: Compress = 0,
    protocol: int | None = None,
    progress_to: progress.Progress = None,
) -> str | None:
    """``persistd.dump`` (documented there) through ``endpoint``;
    ``progress_to`` is its ``progress`` (see ``persistd.progress``)."""
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    path = filename if isinstance(filename, str) else None
    is_fileobj = hasattr(filename, "write")

    method, level, from_true = check_compress(compress)
    if path is None and not is_fileobj:
        # People keep inverting arguments (joblib's comment), so name both.
        raise ValueError(
            "Second argument should be a filename or a file-like object, "
            "%s (type %s) was given." % (filename, type(filename))
        )
    choice = resolve_compress(compress, method, level, from_true, path)
    protocol = _pickle_protocol(protocol)
    report = progress.resolve(progress_to, "dump %s" % (path or "<file object>"))
    if path is not None and remote.is_url(path):
        return remote.dump(
            endpoint, path,
            lambda fd, name, warm: _dump_into(endpoint, value, fd, choice, protocol, name, warm, report),
            appends=choice.codec != pb.CODEC_NONE,
        )
    if path is not None:
        with TempTarget(path) as target:
            reply = _dump_into(endpoint, value, target.fd, choice, protocol, path, report=report)
            target.publish(sync=reply.fsync)
        return path
    # A file object gets the finished file's bytes, copied from memory.
    fd = memory_file("persistd-dump", 0)
    try:
        reply = _dump_into(endpoint, value, fd, choice, protocol, None, report=report)
        _copy_out(fd, int(reply.file_bytes), filename)
    finally:
        os.close(fd)
    return None


def load(
    endpoint: transport.Endpoint,
    filename: FileSource,
    mmap_mode: MmapMode = None,
    ensure_native_byte_order: bool | Literal["auto"] = "auto",
    *,
    allow_pickle: bool = True,
    allowed_globals: Iterable[str | Callable[..., Any]] = (),
    progress_to: progress.Progress = None,
) -> Any:
    """``persistd.load`` (documented there) through ``endpoint``;
    ``progress_to`` is its ``progress`` (see ``persistd.progress``)."""
    if isinstance(ensure_native_byte_order, str) and ensure_native_byte_order == "auto":
        ensure_native_byte_order = mmap_mode is None
    if ensure_native_byte_order and mmap_mode is not None:
        raise ValueError(
            "Native byte ordering can only be enforced if 'mmap_mode' parameter "
            f"is set to None, but got 'mmap_mode={mmap_mode}' instead."
        )
    mode = _mmap_mode(mmap_mode)
    ensure = bool(ensure_native_byte_order)
    allowed = None if allow_pickle else allowlist(allowed_globals)

    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    if hasattr(filename, "read"):
        return _load_fileobj(endpoint, filename, mmap_mode, ensure, allowed)
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    if not isinstance(filename, str):
        raise TypeError(
            "expected str, bytes, os.PathLike object or a file object, not %s"
            % type(filename).__name__
        )
    if remote.is_url(filename):
        return remote.load(endpoint, filename, mode, ensure, allowed)
    report = progress.resolve(progress_to, "load %s" % filename)
    return _load_path(endpoint, filename, mmap_mode, mode, ensure, allowed, report)


# -- dump helpers -------------------------------------------------------------
def _dump_into(
    endpoint: transport.Endpoint,
    value: Any,
    fd: int,
    choice: Any,
    protocol: int,
    filename: str | None,
    warm: bool = True,
    report: progress.ProgressCallback | None = None,
) -> Any:
    """Pickle ``value`` and have the daemon write joblib's stream into the
    empty file ``fd`` (and, when ``warm``, build its segment afterwards). Uncompressed array bytes are written here, into the
    holes the daemon left, straight from the arrays' buffers; compressed
    ones reach the daemon inline (small) or through a memfd, streamed so
    the daemon compresses while they are copied in."""
    plan = plan_dump(value, protocol, external=choice.codec == pb.CODEC_NONE)
    streamed = plan.size > INLINE_PAYLOAD_BYTES and bool(plan.payload_arrays())
    if streamed:
        plan.shift(STREAM_HEADER_BYTES)
    request = pb.DumpRequest(
        skeleton=plan.skeleton_extent(),
        arrays=plan.proto_arrays(),
        codec=choice.codec,
        level=choice.level,
        display_name=filename or "",
        payload_streamed=streamed,
        no_warm=not warm,
    )
    if plan.size <= INLINE_PAYLOAD_BYTES:
        request.payload_inline = bytes(plan.payload_bytes())
        reply = endpoint.dump(request, [fd], filename)
    else:
        payload_fd = memory_file("persistd-payload", plan.size)
        try:
            if streamed:
                seal(payload_fd, writable=True)
                with StreamedPayload(payload_fd, plan) as fill, progress.watching(
                    report, progress.payload_consumed(payload_fd), plan.size
                ):
                    reply = endpoint.dump(request, [fd, payload_fd], filename, fill)
            else:  # only pickles (a large skeleton, object arrays)
                plan.write_payload(
                    lambda offset, data: write_at(payload_fd, memoryview(data), offset)
                )
                seal(payload_fd)
                reply = endpoint.dump(request, [fd, payload_fd], filename)
        finally:
            os.close(payload_fd)
    for part, offset in zip(plan.external_parts(), reply.external_offsets):
        if part.array.nbytes:
            write_at(fd, part.raw_bytes(), int(offset))
    return reply


def _copy_out(fd: int, size: int, fileobj: Any) -> None:
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_COPY_CHUNK, size - offset), offset)
        if not chunk:
            raise EOFError("persistd: the dumped stream ended early")
        fileobj.write(chunk)
        offset += len(chunk)



def _pickle_protocol(protocol: Any) -> int:
    """None or negative: the highest protocol. Checked before anything is
    written (joblib's pickler checks it after creating the file)."""
    if protocol is None:
        return pickle.HIGHEST_PROTOCOL
    number: int = operator.index(protocol)
    if number < 0:
        return pickle.HIGHEST_PROTOCOL
    if number > pickle.HIGHEST_PROTOCOL:
        raise ValueError("pickle protocol must be <= %d" % pickle.HIGHEST_PROTOCOL)
    return number


# -- load helpers -------------------------------------------------------------
def _mmap_mode(mmap_mode: Any) -> str | None:
    """The effective mode: None, 'r', 'c' or 'r+' ('w+' never truncates: it
    means 'r+', as in joblib). Unknown modes get numpy.memmap's error."""
    if mmap_mode is None:
        return None
    mode = _MMAP_MODE_ALIASES.get(mmap_mode, mmap_mode) if isinstance(mmap_mode, str) else mmap_mode
    if mode not in _MMAP_MODES:
        all_modes = list(_MMAP_MODES) + list(_MMAP_MODE_ALIASES)
        raise ValueError(f"mode must be one of {all_modes!r} (got {mmap_mode!r})")
    return "r+" if mode == "w+" else mode


def _load_path(
    endpoint: transport.Endpoint,
    filename: str,
    user_mode: str | None,
    mode: str | None,
    ensure: bool,
    allowed: frozenset[str] | None,
    report: progress.ProgressCallback | None = None,
) -> Any:
    # FileNotFoundError / PermissionError / IsADirectoryError, as open() gives.
    fd = open_source(filename, writable=mode == "r+")
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise EOFError("Ran out of input")
        if mode is None and size <= INLINE_SOURCE_BYTES:
            reply, session_id = endpoint.load(
                source_inline=os.pread(fd, size, 0), filename=filename
            )
        else:
            status = lambda: endpoint.call("Status", pb.StatusRequest(), timeout=2.0)  # noqa: E731
            with progress.watching(report, progress.build_read(status, fd), size,
                                   progress.LOAD_POLL_S):
                reply, session_id = endpoint.load(fd=fd, filename=filename)

        # (A joblib < 0.10 Z-file: the Loader drops mmap_mode, with its warning.)
        if mode == "r+" and reply.codec != pb.CODEC_NONE and reply.format != pb.FORMAT_ZFILE:
            warn(
                'mmap_mode "%(m)s" is not compatible with compressed file %(f)s. '
                '"%(m)s" flag will be ignored.' % {"m": user_mode, "f": filename}
            )
            mode = None
        loader = Loader(
            endpoint,
            reply,
            session_id,
            mmap_mode=mode,
            ensure_native=ensure,
            source_fd=fd,
            filename=filename,
            dirname=os.path.dirname(filename),
            allowed_globals=allowed,
        )
        return loader.load()
    finally:
        os.close(fd)


def _load_fileobj(
    endpoint: transport.Endpoint,
    fileobj: Any,
    user_mode: str | None,
    ensure: bool,
    allowed: frozenset[str] | None,
) -> Any:
    """File objects are sent inline or through a memory file; mmap_mode is
    dropped with joblib's warnings, and a seekable object is left just after
    the value."""
    name = _object_name(fileobj)
    start = _start_position(fileobj)
    size = _remaining(fileobj, start)
    if size is None:
        rewindable = start is not None and _seekable(fileobj)
        reply, session_id, length = _load_stream(endpoint, fileobj, rewindable)
    else:
        reply, session_id, length = _load_known(endpoint, fileobj, start, size)
    if start is not None and _seekable(fileobj):
        fileobj.seek(start + length - int(reply.trailing_bytes))

    # (A joblib < 0.10 Z-file: the Loader warns and drops the byte order.)
    if user_mode is not None and reply.format != pb.FORMAT_ZFILE:
        if isinstance(fileobj, io.BytesIO) and reply.codec == pb.CODEC_NONE:
            warn(
                "In memory persistence is not compatible with "
                'mmap_mode "%s" flag passed. '
                "mmap_mode option will be ignored." % user_mode
            )
        elif reply.codec != pb.CODEC_NONE:
            warn(
                'mmap_mode "%(m)s" is not compatible with compressed file %(f)s. '
                '"%(m)s" flag will be ignored.' % {"m": user_mode, "f": name}
            )
        elif not _is_raw_file(fileobj):
            warn(
                '"%(o)r" is not a raw file, mmap_mode "%(m)s" flag will be ignored.'
                % {"o": fileobj, "m": user_mode}
            )
    loader = Loader(
        endpoint,
        reply,
        session_id,
        mmap_mode=None,
        ensure_native=ensure,
        source_fd=-1,
        filename=name,
        dirname="",  # joblib resolves companions of file objects from the cwd
        allowed_globals=allowed,
    )
    return loader.load()


def _object_name(fileobj: Any) -> str:
    """joblib's ``getattr(fobj, "name", "")``, as text: the name of a file
    opened from a descriptor or of a socket's ``makefile`` is an int."""
    name = getattr(fileobj, "name", "")
    if isinstance(name, str):
        return name
    if isinstance(name, (bytes, os.PathLike)):
        return os.fsdecode(name)
    return str(name)


def _start_position(fileobj: Any) -> int | None:
    """Where the value starts. joblib sniffs the magic bytes with ``peek``
    when the object has it, else with ``read`` then ``seek(0)``: objects
    without ``peek`` (BytesIO) are always read from their start, which lets
    ``dump(v, buf); load(buf)`` work without a seek. We keep that when the
    object is at its end, but read from the current position otherwise, so
    values appended one after another load in turn (joblib #1161/#1167)."""
    start = _tell(fileobj)
    if start is None or hasattr(fileobj, "peek") or not _seekable(fileobj):
        return start
    if start > 0 and not fileobj.read(1):
        fileobj.seek(0)
        return 0
    fileobj.seek(start)
    return start


def _tell(fileobj: Any) -> int | None:
    try:
        return int(fileobj.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _seekable(fileobj: Any) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _is_raw_file(fileobj: Any) -> bool:
    """joblib's ``_is_raw_file``: an ``open()`` file, buffered or not."""
    return isinstance(getattr(fileobj, "raw", fileobj), io.FileIO)


def _load_known(
    endpoint: transport.Endpoint, fileobj: Any, start: int | None, size: int
) -> tuple[Any, str, int]:
    """Load the object's remaining ``size`` bytes (a regular file or a
    BytesIO: the size is known): ``(reply, session_id, bytes read)``."""
    if size == 0:
        raise EOFError("Ran out of input")
    assert start is not None  # a known size implies a known position
    if isinstance(fileobj, io.BytesIO):
        with fileobj.getbuffer() as view:
            chunks = [bytes(view[start : start + size])]
        fileobj.seek(start + size)
    else:
        chunks = _read_exactly(fileobj, size)
    length = sum(len(chunk) for chunk in chunks)
    if length == 0:
        raise EOFError("Ran out of input")
    reply, session_id = _load_bytes(endpoint, chunks)
    return reply, session_id, length


def _load_stream(
    endpoint: transport.Endpoint, fileobj: Any, rewindable: bool
) -> tuple[Any, str, int]:
    """Load from an object of unknown size (a socket's ``makefile``, a pipe,
    a GzipFile...): ``(reply, session_id, bytes staged)``.

    joblib's unpickler reads only as far as the value goes, so a socket that
    stays open after one value loads fine (its test_pickle_in_socket); reading
    to the end of such a stream would block forever. So the bytes are read as
    they come, and whenever the source has nothing more ready, the daemon is
    asked to load what arrived; a ValueError (truncated, or too short to
    tell) means "read on", and at the end of the stream the last error
    stands. Attempts cost O(size), so while data keeps trickling in they are
    spaced until the size has doubled.

    Bytes read past the value: a ``rewindable`` object is sought back by the
    caller; from any other the last peeked chunk is consumed only up to the
    value's end, and what was already read beyond it is kept in ``_unread``
    for the next ``load`` of the same object (values sent back to back).
    """
    data = bytearray(_take_unread(fileobj))
    leftover = bool(data)  # may hold a whole value: try it before reading
    tried = 0  # how many bytes the last attempt had
    error: ValueError | None = None
    peek = getattr(fileobj, "peek", None)
    chunk = b""  # peeked, not consumed yet
    while True:
        total = len(data) + len(chunk)
        if total > tried and (leftover or _paused(fileobj, total, tried)):
            tried = total
            try:
                reply, session_id = _load_bytes(endpoint, [data, chunk])
            except ValueError as exc:
                error = exc
            else:
                excess = int(reply.trailing_bytes) - len(chunk)
                if excess <= 0:
                    _consume(fileobj, -excess)
                elif not rewindable:
                    _keep_unread(fileobj, bytes(data[len(data) - excess :]))
                return reply, session_id, total
        leftover = False
        if chunk:
            _consume(fileobj, len(chunk))
            data += chunk
            chunk = b""
        if peek is not None:
            chunk = bytes(peek(_COPY_CHUNK))
            more = bool(chunk)
        else:
            got = _read_some(fileobj)
            data += got
            more = bool(got)
        if not more:
            break
    if not data:
        raise EOFError("Ran out of input")
    if error is not None and tried == len(data):
        raise error
    reply, session_id = _load_bytes(endpoint, [data])
    excess = int(reply.trailing_bytes)
    if excess and not rewindable:
        _keep_unread(fileobj, bytes(data[len(data) - excess :]))
    return reply, session_id, len(data)


def _load_bytes(endpoint: transport.Endpoint, chunks: list[Any]) -> tuple[Any, str]:
    """One ``Load`` of the concatenated ``chunks``: inline when small, else
    through a sealed memory file (never cached: a file object has no
    identity to find it by again)."""
    length = sum(len(chunk) for chunk in chunks)
    if length <= INLINE_SOURCE_BYTES:
        return endpoint.load(source_inline=b"".join(bytes(c) for c in chunks))
    fd = memory_file("persistd-source", length)
    try:
        offset = 0
        for chunk in chunks:
            write_at(fd, memoryview(chunk), offset)
            offset += len(chunk)
        seal(fd)
        return endpoint.load(fd=fd, transient=True)
    finally:
        os.close(fd)


def _read_some(fileobj: Any) -> bytes:
    """Whatever is available, blocking only while nothing is: ``read1`` for
    buffered objects, a plain ``read`` for raw ones (it returns what the
    source has)."""
    read1 = getattr(fileobj, "read1", None)
    if read1 is not None:
        return bytes(read1(_COPY_CHUNK))
    return bytes(fileobj.read(_COPY_CHUNK) or b"")


def _consume(fileobj: Any, count: int) -> None:
    """Advance past ``count`` peeked bytes."""
    while count > 0:
        got = fileobj.read(count)
        if not got:
            break
        count -= len(got)


def _take_unread(fileobj: Any) -> bytes:
    try:
        return _unread.pop(fileobj, b"")
    except TypeError:  # not weak-referenceable: nothing can have been kept
        return b""


def _keep_unread(fileobj: Any, excess: bytes) -> None:
    try:
        _unread[fileobj] = excess
    except TypeError:
        warn(
            "persistd: %d bytes read after the value from %r cannot be given back "
            "(it can neither seek nor be weakly referenced)" % (len(excess), fileobj)
        )


def _paused(fileobj: Any, total: int, tried: int) -> bool:
    """Time to try a load: the source has nothing more ready and either the
    data doubled since the last attempt or nothing came for a while."""
    if _more_ready(fileobj, 0.0):
        return False
    return total >= 2 * tried or not _more_ready(fileobj, _STREAM_WAIT_S)


def _more_ready(fileobj: Any, timeout: float) -> bool:
    """Whether the object's file descriptor has data within ``timeout``. An
    object without one (or a regular file) counts as ready: it is read on to
    its end, which cannot block forever."""
    try:
        fd = fileobj.fileno()
        if hasattr(select, "poll"):  # select() refuses fds >= FD_SETSIZE
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(int(timeout * 1000)))
        readable, _, _ = select.select([fd], [], [], timeout)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return True
    return bool(readable)


def _remaining(fileobj: Any, start: int | None) -> int | None:
    """Bytes left in a regular file or a BytesIO; None for anything else."""
    if start is None:
        return None
    if isinstance(fileobj, io.BytesIO):
        with fileobj.getbuffer() as view:
            return max(view.nbytes - start, 0)
    if not _is_raw_file(fileobj):
        return None
    try:
        info = os.fstat(fileobj.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return max(info.st_size - start, 0)


def _read_exactly(source: BinaryIO, size: int) -> list[bytes]:
    """Up to ``size`` bytes of ``source``, fewer only at its end."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = source.read(min(_COPY_CHUNK, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks
