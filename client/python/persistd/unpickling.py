"""The load side: turn a daemon segment back into the value.

The daemon decompressed the file once into a shared segment and rewrote the
pickle so that every array wrapper reads ``__persistd__.materialize(wrapper)``.
This module unpickles that skeleton with the C unpickler. ``find_class``
hands out the bound ``materialize`` of the current load, which pairs its
i-th call with ``reply.arrays[i]`` and returns the array, and small stand-ins
for joblib's wrapper classes, so joblib need not be installed. Everything
else is what joblib 1.6 does in ``NumpyArrayWrapper.read`` and
``numpy_pickle_compat``, including its byte-order and subclass rules.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import sys
import warnings
from typing import Any

import numpy as np

from persistd import transport
from persistd._proto import persistd_pb2 as pb
from persistd.safety import qualified_name, refuse

_NUMPY_ARRAY_ALIGNMENT_BYTES = 16
_JOBLIB_MODULES = frozenset({"joblib.numpy_pickle", "joblib.numpy_pickle_compat"})


class NumpyArrayWrapper:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: BUILD fills
    ``__dict__`` (subclass, shape, order, dtype, allow_mmap and, since joblib
    1.2, numpy_array_alignment_bytes)."""

    subclass: Any
    shape: Any
    order: str
    dtype: Any


class NDArrayWrapper:
    """Stand-in for joblib < 0.10's wrapper of an array kept in a companion
    ``.npy`` file (filename, subclass, allow_mmap)."""

    filename: str
    subclass: Any


class ZNDArrayWrapper(NDArrayWrapper):
    """Stand-in for joblib < 0.10's wrapper of an array kept in a companion
    zlib Z-file (filename, init_args, state)."""

    init_args: tuple[Any, ...]
    state: tuple[Any, ...]


_STAND_INS: dict[str, type] = {
    "NumpyArrayWrapper": NumpyArrayWrapper,
    "NDArrayWrapper": NDArrayWrapper,
    "ZNDArrayWrapper": ZNDArrayWrapper,
}

PY2_MESSAGE = (
    "You may be trying to read with "
    "python 3 a joblib pickle generated with python 2. "
    "This feature is not supported by joblib."
)


def legacy_message(filename: str) -> str:
    return (
        "The file '%s' has been generated with a joblib "
        "version less than 0.10. "
        "Please regenerate this pickle file." % filename
    )


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside persistd."""
    frame: Any = sys._getframe(0)
    level = 1
    while frame is not None and _is_ours(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _is_ours(module: str) -> bool:
    return module == "persistd" or module.startswith("persistd.")


class Unpickler(pickle.Unpickler):
    """The C unpickler, resolving persistd's and joblib's globals locally."""

    def __init__(self, file: io.BytesIO, loader: Loader) -> None:
        super().__init__(file)
        self._loader = loader

    def find_class(self, module: str, name: str) -> Any:
        if module == "__persistd__" and name == "materialize":
            return self._loader.materialize
        if module in _JOBLIB_MODULES and name in _STAND_INS:
            return _STAND_INS[name]
        allowed = self._loader.allowed_globals
        if allowed is not None and qualified_name(module, name) not in allowed:
            raise refuse(module, name, self._loader.filename)
        return super().find_class(module, name)


class Loader:
    """One load: the reply, its mapped segment, and how arrays come back.

    ``mmap_mode`` is the effective mode (None: in memory, else 'r', 'c' or
    'r+'); ``source_fd`` is the descriptor the daemon indexed (-1 for file
    objects): 'r+' maps that very file, never whatever the path names now;
    ``filename`` is what the user passed, for messages.
    """

    def __init__(
        self,
        endpoint: transport.Endpoint,
        reply: Any,
        session_id: str,
        *,
        mmap_mode: str | None,
        ensure_native: bool,
        source_fd: int,
        filename: str,
        dirname: str,
        allowed_globals: frozenset[str] | None = None,
    ) -> None:
        if reply.format == pb.FORMAT_ZFILE:
            # joblib < 0.10 Z-file: joblib warns, and ignores mmap_mode and
            # byte order (every entry point: paths, file objects, URLs).
            warn(legacy_message(filename), DeprecationWarning)
            mmap_mode, ensure_native = None, False
        self.endpoint = endpoint
        self.reply = reply
        #: None: any global (a normal pickle load); else only these.
        self.allowed_globals = allowed_globals
        self.mmap_mode = mmap_mode
        self.ensure_native = ensure_native
        self.source_fd = source_fd
        self.filename = filename
        self.dirname = dirname
        self.uncompressed = reply.codec == pb.CODEC_NONE
        self.lease = endpoint.make_lease(session_id, reply.lease_id)
        self.segment: Any = (
            transport.map_segment(reply.segment_path, self.lease)
            if reply.segment_path
            # A small result came inline: arrays are writable views of it.
            else bytearray(reply.segment_inline)
        )
        self.compat_mode = False
        self._next = 0

    # -- entry point --------------------------------------------------------
    def load(self) -> Any:
        """The value. A file whose arrays are joblib < 0.10 wrappers warns,
        once read, as joblib does (every entry point: paths, file objects,
        URLs)."""
        extent = self.reply.skeleton
        try:
            value = self._unpickle(extent.offset, extent.length)
        except UnicodeDecodeError as exc:
            raise ValueError(PY2_MESSAGE) from exc
        finally:
            # Arrays made in memory keep the segment (and lease) alive; if
            # none did, dropping our reference queues the release now.
            self.segment = None
            self.lease = None
        if self.compat_mode:
            warn(legacy_message(self.filename), DeprecationWarning)
        return value

    def _unpickle(self, offset: int, length: int) -> Any:
        assert self.segment is not None
        with memoryview(self.segment) as view:
            stream = io.BytesIO(view[offset : offset + length])
        return Unpickler(stream, self).load()

    # -- the materialize global -----------------------------------------------
    def materialize(self, wrapper: Any) -> Any:
        """Called by the skeleton for the i-th array wrapper, in stream order."""
        index = self._next
        self._next += 1
        arrays = self.reply.arrays
        if index >= len(arrays):
            raise pickle.UnpicklingError(
                "persistd: the file %r has more array wrappers than the daemon "
                "indexed (%d)" % (self.filename, len(arrays))
            )
        entry = arrays[index]
        if isinstance(wrapper, NDArrayWrapper):
            return self._legacy(wrapper)
        if not isinstance(wrapper, NumpyArrayWrapper):
            raise pickle.UnpicklingError(
                "persistd: array %d of %r is a %s, not an array wrapper"
                % (index, self.filename, type(wrapper).__name__)
            )
        if entry.kind == pb.LoadArray.OBJECT_STREAM:
            array = self._unpickle(entry.data.offset, entry.data.length)
        elif entry.kind == pb.LoadArray.RAW:
            if self.mmap_mode is not None and getattr(wrapper, "allow_mmap", False):
                return self._restore_subclass(wrapper.subclass, self._memmap(wrapper, entry))
            array = self._in_memory(wrapper, entry)
        else:
            raise pickle.UnpicklingError(
                "persistd: array %d of %r has kind %d for a NumpyArrayWrapper"
                % (index, self.filename, entry.kind)
            )
        if self.ensure_native:
            array = ensure_native_byte_order(array)
        return self._restore_subclass(wrapper.subclass, array)

    # -- RAW arrays -----------------------------------------------------------
    def _in_memory(self, wrapper: Any, entry: Any) -> np.ndarray:
        dtype = np.dtype(wrapper.dtype)
        count = element_count(wrapper.shape)
        _check_length(self.filename, entry, count * dtype.itemsize)
        if count == 0 or dtype.itemsize == 0 or self.segment is None:
            array = np.empty(count, dtype=dtype)
        else:
            array = np.frombuffer(
                self.segment, dtype=dtype, count=count, offset=entry.data.offset
            )
        if wrapper.order == "F":
            return array.reshape(wrapper.shape[::-1]).transpose()
        return array.reshape(wrapper.shape)

    def _memmap(self, wrapper: Any, entry: Any) -> np.ndarray:
        dtype = np.dtype(wrapper.dtype)
        count = element_count(wrapper.shape)
        _check_length(self.filename, entry, count * dtype.itemsize)
        mode: Any = self.mmap_mode
        target: Any
        if mode == "r+":
            assert self.source_fd >= 0
            target = _FileOfFd(self.source_fd, os.path.abspath(self.filename))
            offset = int(entry.source_offset)
        else:
            target, offset = self.reply.segment_path, int(entry.data.offset)
        marray: np.ndarray
        try:
            marray = np.memmap(
                target, dtype=dtype, mode=mode, offset=offset,
                shape=tuple(wrapper.shape), order=wrapper.order,
            )
        except (ValueError, OSError):
            if count:
                raise
            # Nothing to map: np.memmap cannot map zero bytes at the end of a file.
            marray = np.empty(wrapper.shape, dtype=dtype, order=wrapper.order)
            marray.flags.writeable = mode != "r"
        else:
            if mode != "r+":
                marray._persistd_lease = self.lease  # type: ignore[attr-defined,unused-ignore]
        if (
            not entry.padded
            and self.uncompressed
            and int(entry.source_offset) % _NUMPY_ARRAY_ALIGNMENT_BYTES != 0
        ):
            warn(
                f"The memmapped array {marray} loaded from the file "
                f"{self.filename} is not byte aligned. "
                "This may cause segmentation faults if this memmapped array "
                "is used in some libraries like BLAS or PyTorch. "
                "To get rid of this warning, regenerate your pickle file "
                "with joblib >= 1.2.0. "
                "See https://github.com/joblib/joblib/issues/563 "
                "for more details"
            )
        return marray

    # -- joblib < 0.10 --------------------------------------------------------
    def _legacy(self, wrapper: Any) -> Any:
        companion = os.path.join(self.dirname, wrapper.filename)
        if isinstance(wrapper, ZNDArrayWrapper):
            # Companion Z-file: the daemon decompresses, numpy rebuilds.
            data = _raw_payload(self.endpoint, companion)
            array = _reconstruct(*wrapper.init_args)
            array.__setstate__(wrapper.state + (data,))
            return array
        self.compat_mode = True
        kwargs: dict[str, Any] = {"allow_pickle": self.allowed_globals is None}
        if getattr(wrapper, "allow_mmap", True):
            kwargs["mmap_mode"] = self.mmap_mode
        array = np.load(companion, **kwargs)
        array = ensure_native_byte_order(array)
        return self._restore_subclass(wrapper.subclass, array)

    # -- subclasses -------------------------------------------------------------
    @staticmethod
    def _restore_subclass(subclass: Any, array: Any) -> Any:
        """joblib 1.6's rule, verbatim. ``ndarray.__array_prepare__`` is gone
        in numpy 2, so there a matrix comes back as a plain ndarray, as it
        does from joblib itself."""
        if hasattr(array, "__array_prepare__") and subclass not in (np.ndarray, np.memmap):
            new_array = _reconstruct(subclass, (0,), "b")
            return new_array.__array_prepare__(array)
        return array


def element_count(shape: Any) -> int:
    """Product of the shape, 1 for 0-d. Exact (Python ints): a shape whose
    product joblib's int64 arithmetic would wrap (#859) then fails the
    length check instead of reading a wrong count."""
    return math.prod(int(x) for x in shape)


def _check_length(filename: str, entry: Any, expected: int) -> None:
    if int(entry.data.length) != expected:
        raise ValueError(
            "EOF: reading array data, expected %d bytes got %d (file %r)"
            % (expected, entry.data.length, filename)
        )


def _is_byte_order_mismatch(array: np.ndarray) -> bool:
    """joblib's ``_is_numpy_array_byte_order_mismatch``: a non-native byte
    order, or a struct whose fields are all non-native. Mixed structs stay."""
    foreign = ">" if sys.byteorder == "little" else "<"
    dtype = array.dtype
    fields = dtype.fields
    return dtype.byteorder == foreign or (
        dtype.byteorder == "|"
        and bool(fields)
        and all(field[0].byteorder == foreign for field in (fields or {}).values())
    )


def ensure_native_byte_order(array: Any) -> Any:
    """Swap to the host's byte order, preserving values (joblib's rule)."""
    if _is_byte_order_mismatch(array):
        return array.byteswap().view(array.dtype.newbyteorder("="))
    return array


def _reconstruct(*args: Any, **kwargs: Any) -> Any:
    if np.__version__.startswith("1."):
        from numpy.core.multiarray import _reconstruct as np_reconstruct
    else:
        from numpy._core.multiarray import _reconstruct as np_reconstruct
    return np_reconstruct(*args, **kwargs)


class _FileOfFd(io.FileIO):
    """The descriptor a load passed to the daemon, as the file object
    ``np.memmap`` maps, named like the path so ``memmap.filename`` reads as
    joblib's does. The descriptor stays the caller's to close."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(fd, "r+", closefd=False)
        self.name = name


def _raw_payload(endpoint: transport.Endpoint, companion: str) -> bytes:
    """The decompressed bytes of a joblib < 0.10 companion Z-file."""
    from persistd.files import open_source

    fd = open_source(companion)
    try:
        reply, _ = endpoint.load(fd=fd, raw=True, lease=False, filename=companion)
    finally:
        os.close(fd)
    extent = reply.skeleton
    if extent.length == 0 and reply.arrays:
        extent = reply.arrays[0].data
    if extent.length == 0:
        extent = pb.Extent(offset=0, length=reply.segment_size)
    segment = transport.map_segment(reply.segment_path, None)
    try:
        return segment[extent.offset : extent.offset + extent.length]
    finally:
        segment.close()
