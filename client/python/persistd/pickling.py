"""The dump side: pickle the value, describe its arrays, lay out the payload.

joblib writes a file with its pure-Python ``NumpyPickler``, which intercepts
``save()`` for every array so that the array's bytes follow its
``NumpyArrayWrapper`` in the stream (joblib #467: that pickler is the slow
part). persistd splits the work instead:

* the C pickler writes the *skeleton*: the value with every array replaced by
  a persistent id, the array's index (a str of it for protocol 0, whose
  PERSID opcode takes text);
* each array contributes the ``NumpyArrayWrapper`` state dict that joblib
  would have pickled, pickled alone without memo so the daemon can splice it
  into the skeleton, and its data: raw element bytes, or for object dtype
  the nested protocol-5 pickle joblib writes;
* the daemon splices these into joblib's container format and compresses.

Where array bytes go: for an uncompressed dump they are EXTERNAL, the
daemon leaves a hole for each in the target and this process writes them
there from the array's own buffer (one copy, by the kernel). For a
compressed dump they are part of the payload the daemon compresses, copied
once into it. They are never materialised as ``bytes``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persistd._proto import persistd_pb2 as pb

#: joblib's NUMPY_ARRAY_ALIGNMENT_BYTES, recorded in every wrapper state.
NUMPY_ARRAY_ALIGNMENT_BYTES = 16
#: Alignment of raw array data inside the payload (cache lines, SIMD).
PAYLOAD_ALIGNMENT = 64

#: Exactly these types are intercepted, as in joblib's ``NumpyPickler.save``;
#: any other subclass (masked arrays...) pickles itself normally.
_INTERCEPTED = (np.ndarray, np.matrix, np.memmap)


@dataclass
class ArrayPart:
    """One intercepted array and where its pieces go in the payload."""

    array: np.ndarray
    order: str
    state: bytes
    stream: bytes | None  # object dtype: the nested pickle; else None
    external: bool = False  # raw bytes the client writes into the target
    state_offset: int = 0
    data_offset: int = 0

    @property
    def kind(self) -> Any:  # a pb.DumpArray.Kind value
        if self.stream is not None:
            return pb.DumpArray.OBJECT_STREAM
        return pb.DumpArray.EXTERNAL if self.external else pb.DumpArray.RAW

    @property
    def data_length(self) -> int:
        return len(self.stream) if self.stream is not None else int(self.array.nbytes)

    def raw_bytes(self) -> memoryview:
        """The elements in ``order`` as flat bytes, copied only when the
        array is not contiguous in that order."""
        array = self.array
        if self.order == "F":
            array = array.T  # F-contiguous bytes are the transpose's C order
        array = np.ascontiguousarray(array)
        return array.reshape(-1).view(np.uint8).data


#: Writes bytes at an offset of the payload (a bytearray, or a memfd).
Writer = Callable[[int, "bytes | memoryview"], None]


@dataclass
class DumpPlan:
    """Everything the daemon needs for one dump, with the payload's layout."""

    skeleton: bytes
    arrays: list[ArrayPart] = field(default_factory=list)
    size: int = 0  # of the payload, from 0 (including any header)
    base: int = 0  # where the skeleton starts (after a header)

    def write_payload(self, write: Writer) -> None:
        """Skeleton, state pickles, object streams and non-external data."""
        self.write_prefix(write)
        for part in self.payload_arrays():
            write(part.data_offset, part.raw_bytes())

    def write_prefix(self, write: Writer) -> None:
        """Everything but raw array data: the skeleton, the state pickles
        and object streams (laid out first, so this is a prefix)."""
        write(self.base, self.skeleton)
        for part in self.arrays:
            write(part.state_offset, part.state)
            if part.stream is not None:
                write(part.data_offset, part.stream)

    def payload_arrays(self) -> list[ArrayPart]:
        """Raw arrays whose bytes are in the payload, in offset order."""
        return [
            part for part in self.arrays
            if part.stream is None and not part.external and part.array.nbytes
        ]

    def prefix_end(self) -> int:
        ends = [self.base + len(self.skeleton)]
        for part in self.arrays:
            ends.append(part.state_offset + len(part.state))
            if part.stream is not None:
                ends.append(part.data_offset + len(part.stream))
        return max(ends)

    def payload_bytes(self) -> bytearray:
        buffer = bytearray(self.size)

        def write(offset: int, data: bytes | memoryview) -> None:
            buffer[offset : offset + len(data)] = data

        self.write_payload(write)
        return buffer

    def external_parts(self) -> list[ArrayPart]:
        return [part for part in self.arrays if part.external]

    def proto_arrays(self) -> list[pb.DumpArray]:
        return [
            pb.DumpArray(
                kind=part.kind,
                state=pb.Extent(offset=part.state_offset, length=len(part.state)),
                data=pb.Extent(offset=part.data_offset, length=part.data_length),
            )
            for part in self.arrays
        ]

    def skeleton_extent(self) -> pb.Extent:
        return pb.Extent(offset=self.base, length=len(self.skeleton))

    def shift(self, header: int) -> None:
        """Make room for a header of ``header`` bytes (a multiple of
        PAYLOAD_ALIGNMENT) before everything."""
        self.base += header
        self.size += header
        for part in self.arrays:
            part.state_offset += header
            part.data_offset += header


class SkeletonPickler(pickle.Pickler):
    """The C pickler, with arrays swapped for persistent ids.

    ``persistent_id`` runs before the memo lookup, so an array that occurs
    twice gets two ids and is written twice, as joblib writes it twice.
    """

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.found: list[np.ndarray] = []
        self._text_ids = protocol == 0

    def persistent_id(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is not np.ndarray and cls is not np.matrix and cls is not np.memmap:
            return None
        if cls is np.memmap:
            obj = np.asanyarray(obj)  # as joblib does ("Pickling doesn't work with memmapped arrays")
        index = len(self.found)
        self.found.append(obj)
        return str(index) if self._text_ids else index


def plan_dump(value: Any, protocol: int, external: bool) -> DumpPlan:
    """Pickle ``value`` and lay out its payload; with ``external`` (an
    uncompressed dump) raw array bytes stay out of the payload."""
    buffer = io.BytesIO()
    pickler = SkeletonPickler(buffer, protocol)
    pickler.dump(value)
    plan = DumpPlan(skeleton=buffer.getvalue())
    del buffer
    states: dict[Any, bytes] = {}  # models repeat a few array layouts
    plan.arrays = [_array_part(array, protocol, external, states) for array in pickler.found]
    _layout(plan)
    return plan


def wrapper_state(array: np.ndarray) -> dict[str, Any]:
    """The attributes ``NumpyArrayWrapper.__init__`` sets, in its order.

    ``allow_mmap`` is ``not dtype.hasobject`` (joblib's ``buffered`` flag is
    always False in practice, even for compressed files), and the alignment
    is always recorded since the daemon always knows the stream position.
    """
    return {
        "subclass": type(array),
        "shape": array.shape,
        "order": array_order(array),
        "dtype": array.dtype,
        "allow_mmap": not array.dtype.hasobject,
        "numpy_array_alignment_bytes": NUMPY_ARRAY_ALIGNMENT_BYTES,
    }


def array_order(array: np.ndarray) -> str:
    """joblib's rule: 'F' only for arrays that are F- but not C-contiguous;
    every other array, non-contiguous ones included, is written in C order."""
    flags = array.flags
    return "F" if (flags.f_contiguous and not flags.c_contiguous) else "C"


def _array_part(
    array: np.ndarray, protocol: int, external: bool, states: dict[Any, bytes]
) -> ArrayPart:
    order = array_order(array)
    # The state pickle depends only on these; a model of 200 trees has a
    # handful of distinct ones, so each is pickled once.
    key = (type(array), array.shape, order, array.dtype)
    state = states.get(key)
    if state is None:
        state_buffer = io.BytesIO()
        state_pickler = pickle.Pickler(state_buffer, protocol=protocol)
        state_pickler.fast = True  # no memo: the daemon splices it into the skeleton
        state_pickler.dump(wrapper_state(array))
        state = states[key] = state_buffer.getvalue()
    # joblib: pickle.dump(array, file_handle, protocol=5) for object dtype.
    stream = pickle.dumps(array, protocol=5) if array.dtype.hasobject else None
    return ArrayPart(array, order, state, stream, external=external and stream is None)


def _layout(plan: DumpPlan) -> None:
    """Skeleton, then state pickles and object streams packed, then the raw
    data that is not external, each array on a PAYLOAD_ALIGNMENT boundary."""
    offset = len(plan.skeleton)
    for part in plan.arrays:
        part.state_offset = offset
        offset += len(part.state)
        if part.stream is not None:
            part.data_offset = offset
            offset += len(part.stream)
    for part in plan.arrays:
        if part.stream is None and not part.external:
            offset = -(-offset // PAYLOAD_ALIGNMENT) * PAYLOAD_ALIGNMENT
            part.data_offset = offset
            offset += part.data_length
    plan.size = offset
