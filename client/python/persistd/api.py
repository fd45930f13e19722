"""``dump`` and ``load``: joblib's signatures, checks and messages.

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

import errno
import io
import operator
import os
import pickle
import shutil
import stat
from typing import Any, BinaryIO

from persistd import transport
from persistd._proto import persistd_pb2 as pb
from persistd.compression import check_compress, resolve_compress
from persistd.pickling import plan_dump
from persistd.unpickling import Loader, legacy_message, warn

_MMAP_MODES = ("r", "c", "r+", "w+")
#: numpy.memmap's long spellings of the modes.
_MMAP_MODE_ALIASES = {
    "readonly": "r",
    "copyonwrite": "c",
    "readwrite": "r+",
    "write": "w+",
}
_COPY_CHUNK = 1 << 20


def dump(value: Any, filename: Any, compress: Any = 0, protocol: int | None = None) -> str | None:
    """Persist an arbitrary Python object into one file, joblib's format.

    Parameters
    ----------
    value: any Python object
        The object to store. Arrays whose type is exactly ``np.ndarray``,
        ``np.matrix`` or ``np.memmap`` are stored as raw bytes after the
        pickle, as joblib stores them; everything else is pickled.
    filename: str, os.PathLike, or file object
        Where to store it. A path's extension ('.z', '.gz', '.bz2', '.lzma',
        '.xz', '.lz4', '.zst') selects the compressor unless ``compress``
        names one. A path is written atomically.
    compress: bool, int 0-9, str or (str, int), optional
        0/False: no compression. True: zlib level 1. 1-9: zlib at that
        level. 'zlib', 'gzip', 'bz2', 'lzma', 'xz', 'lz4', 'zstd': that
        method at its default level; a (method, level) tuple picks both.
    protocol: int, optional
        Pickle protocol; None (or negative) means pickle.HIGHEST_PROTOCOL.

    Returns
    -------
    The filename as a str for paths, None for file objects.
    """
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    is_filename = isinstance(filename, str)
    is_fileobj = hasattr(filename, "write")

    method, level, from_true = check_compress(compress)
    if not is_filename and not is_fileobj:
        # People keep inverting arguments (joblib's comment), so name both.
        raise ValueError(
            "Second argument should be a filename or a file-like object, "
            "%s (type %s) was given." % (filename, type(filename))
        )
    choice = resolve_compress(
        compress, method, level, from_true, filename if is_filename else None
    )
    protocol = _pickle_protocol(protocol)
    target = ""
    if is_filename:
        target = _dump_target(filename)

    plan = plan_dump(value, protocol)
    staging_id = transport.run_with_staging(plan.size, plan.fill)
    try:
        request = pb.CommitDumpRequest(
            staging_id=staging_id,
            skeleton=plan.skeleton_extent(),
            arrays=plan.proto_arrays(),
            codec=choice.codec,
            level=choice.level,
            target_path=target,
        )
        del plan
        reply = transport.call(
            "CommitDump", request, filename=filename if is_filename else None
        )
        if is_fileobj:
            with open(reply.output_path, "rb") as produced:
                shutil.copyfileobj(produced, filename, _COPY_CHUNK)
    finally:
        transport.drop_staging(staging_id)
    return filename if is_filename else None


def load(filename: Any, mmap_mode: str | None = None, ensure_native_byte_order: Any = "auto") -> Any:
    """Reconstruct a Python object from a file persisted with ``dump`` (or
    with joblib.dump, any version back to 0.8).

    WARNING: like joblib.load this unpickles, which can execute arbitrary
    code: never load files from untrusted sources.

    Parameters
    ----------
    filename: str, bytes, os.PathLike, or file object
    mmap_mode: {None, 'r+', 'r', 'w+', 'c'}, optional
        None loads arrays into private memory (copy-on-write pages of the
        daemon's shared segment). 'r' and 'c' memory-map arrays, from the
        decompressed segment for compressed files. 'r+' (and 'w+', treated as
        'r+') map an uncompressed file itself, so writes reach it; with a
        compressed file they are ignored with a warning.
    ensure_native_byte_order: bool or 'auto'
        Swap arrays to the host's byte order. 'auto' means True when
        ``mmap_mode`` is None; True with a ``mmap_mode`` is an error.
    """
    if isinstance(ensure_native_byte_order, str) and ensure_native_byte_order == "auto":
        ensure_native_byte_order = mmap_mode is None
    if ensure_native_byte_order and mmap_mode is not None:
        raise ValueError(
            "Native byte ordering can only be enforced if 'mmap_mode' parameter "
            f"is set to None, but got 'mmap_mode={mmap_mode}' instead."
        )
    mode = _mmap_mode(mmap_mode)
    ensure = bool(ensure_native_byte_order)

    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    if hasattr(filename, "read"):
        return _load_fileobj(filename, mmap_mode, ensure)
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    if not isinstance(filename, str):
        raise TypeError(
            "expected str, bytes, os.PathLike object or a file object, not %s"
            % type(filename).__name__
        )
    return _load_path(filename, mmap_mode, mode, ensure)


# -- dump helpers -------------------------------------------------------------
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


def _dump_target(filename: str) -> str:
    """The absolute target path, refused early (as ``open(filename, 'wb')``
    would refuse it) when its directory is missing or it is a directory."""
    if filename == "":
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), filename)
    target = os.path.abspath(filename)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
    if not os.path.isdir(os.path.dirname(target)):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), filename)
    return target


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


def _load_path(filename: str, user_mode: str | None, mode: str | None, ensure: bool) -> Any:
    info = os.stat(filename)  # FileNotFoundError / PermissionError, as open() gives
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
    if info.st_size == 0:
        raise EOFError("Ran out of input")
    source = os.path.abspath(filename)
    reply, session_id = transport.load(path=source, filename=filename)

    if reply.format == pb.FORMAT_ZFILE:
        # joblib < 0.10 Z-file: joblib ignores mmap_mode and byte order here.
        warn(legacy_message(filename), DeprecationWarning)
        mode, ensure = None, False
    elif mode == "r+" and reply.codec != pb.CODEC_NONE:
        warn(
            'mmap_mode "%(m)s" is not compatible with compressed file %(f)s. '
            '"%(m)s" flag will be ignored.' % {"m": user_mode, "f": filename}
        )
        mode = None
    loader = Loader(
        reply,
        session_id,
        mmap_mode=mode,
        ensure_native=ensure,
        source_path=source,
        filename=filename,
        dirname=os.path.dirname(filename),
    )
    return _finish(loader, filename)


def _load_fileobj(fileobj: Any, user_mode: str | None, ensure: bool) -> Any:
    """File objects are copied into a staging file; mmap_mode is dropped with
    joblib's warnings, and a seekable object is left just after the value."""
    name = getattr(fileobj, "name", "")
    start = _start_position(fileobj)
    staging_id, length = _stage_fileobj(fileobj, start)
    try:
        reply, session_id = transport.load(staging_id=staging_id, staging_length=length)
    finally:
        transport.drop_staging(staging_id)
    if start is not None and _seekable(fileobj):
        fileobj.seek(start + length - int(reply.trailing_bytes))

    if reply.format == pb.FORMAT_ZFILE:
        warn(legacy_message(name), DeprecationWarning)
        ensure = False
    elif user_mode is not None:
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
        reply,
        session_id,
        mmap_mode=None,
        ensure_native=ensure,
        source_path=None,
        filename=name if isinstance(name, str) else os.fsdecode(name),
        dirname="",  # joblib resolves companions of file objects from the cwd
    )
    return _finish(loader, loader.filename)


def _finish(loader: Loader, filename: str) -> Any:
    value = loader.load()
    if loader.compat_mode:
        warn(legacy_message(filename), DeprecationWarning)
    return value


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


def _stage_fileobj(fileobj: Any, start: int | None) -> tuple[str, int]:
    """Copy the object's remaining bytes into a new staging file.

    Regular files and BytesIO know their remaining size, so they are copied
    straight into a staging file of that size; any other object (GzipFile,
    sockets...) is read to its end first, since staging needs a size up front.
    """
    size = _remaining(fileobj, start)
    if size is None:
        data = _read_all(fileobj)
        if not data:
            raise EOFError("Ran out of input")
        staging_id, path = transport.create_staging(len(data))
        try:
            with open(path, "r+b") as out:
                out.write(data)
        except BaseException:
            transport.drop_staging(staging_id)
            raise
        return staging_id, len(data)
    if size == 0:
        raise EOFError("Ran out of input")
    assert start is not None  # a known size implies a known position
    staging_id, path = transport.create_staging(size)
    try:
        with open(path, "r+b") as out:
            if isinstance(fileobj, io.BytesIO):
                with fileobj.getbuffer() as view:
                    out.write(view[start : start + size])
                fileobj.seek(start + size)
                copied = size
            else:
                copied = _copy_exactly(fileobj, out, size)
    except BaseException:
        transport.drop_staging(staging_id)
        raise
    if copied == 0:
        transport.drop_staging(staging_id)
        raise EOFError("Ran out of input")
    return staging_id, copied


def _remaining(fileobj: Any, start: int | None) -> int | None:
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


def _copy_exactly(source: BinaryIO, out: BinaryIO, size: int) -> int:
    copied = 0
    while copied < size:
        chunk = source.read(min(_COPY_CHUNK, size - copied))
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
    return copied


def _read_all(fileobj: Any) -> bytes:
    chunks = []
    while True:
        chunk = fileobj.read(_COPY_CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
