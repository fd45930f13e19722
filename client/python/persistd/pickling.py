"""The dump side: pickle the value, describe its arrays, fill the staging file.

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

Array bytes go straight from the array into the shared staging mapping with
one ``np.copyto`` (non-contiguous arrays are gathered in the same pass);
they are never materialised as ``bytes``.
"""

from __future__ import annotations

import io
import mmap
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persistd._proto import persistd_pb2 as pb

#: joblib's NUMPY_ARRAY_ALIGNMENT_BYTES, recorded in every wrapper state.
NUMPY_ARRAY_ALIGNMENT_BYTES = 16
#: Alignment of raw array data inside the staging file (cache lines, SIMD).
STAGING_ALIGNMENT = 64

#: Exactly these types are intercepted, as in joblib's ``NumpyPickler.save``;
#: any other subclass (masked arrays...) pickles itself normally.
_INTERCEPTED = (np.ndarray, np.matrix, np.memmap)


@dataclass
class ArrayPart:
    """One intercepted array and where its pieces go in the staging file."""

    array: np.ndarray
    order: str
    state: bytes
    stream: bytes | None  # object dtype: the nested pickle; else None
    state_offset: int = 0
    data_offset: int = 0

    @property
    def kind(self) -> Any:  # a pb.DumpArray.Kind value
        return pb.DumpArray.OBJECT_STREAM if self.stream is not None else pb.DumpArray.RAW

    @property
    def data_length(self) -> int:
        return len(self.stream) if self.stream is not None else int(self.array.nbytes)


@dataclass
class DumpPlan:
    """Everything to write into one staging file, with its layout."""

    skeleton: bytes
    arrays: list[ArrayPart] = field(default_factory=list)
    size: int = 0

    def fill(self, mapping: mmap.mmap) -> None:
        """Write skeleton, state pickles, object streams and raw data."""
        mapping[0 : len(self.skeleton)] = self.skeleton
        for part in self.arrays:
            mapping[part.state_offset : part.state_offset + len(part.state)] = part.state
            if part.stream is not None:
                end = part.data_offset + len(part.stream)
                mapping[part.data_offset : end] = part.stream
            elif part.array.nbytes:
                _copy_into(mapping, part)

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
        return pb.Extent(offset=0, length=len(self.skeleton))


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


def plan_dump(value: Any, protocol: int) -> DumpPlan:
    """Pickle ``value`` and lay out the staging file for it."""
    buffer = io.BytesIO()
    pickler = SkeletonPickler(buffer, protocol)
    pickler.dump(value)
    plan = DumpPlan(skeleton=buffer.getvalue())
    del buffer
    plan.arrays = [_array_part(array, protocol) for array in pickler.found]
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


def _array_part(array: np.ndarray, protocol: int) -> ArrayPart:
    state_buffer = io.BytesIO()
    state_pickler = pickle.Pickler(state_buffer, protocol=protocol)
    state_pickler.fast = True  # no memo: the daemon splices it into the skeleton
    state_pickler.dump(wrapper_state(array))
    # joblib: pickle.dump(array, file_handle, protocol=5) for object dtype.
    stream = pickle.dumps(array, protocol=5) if array.dtype.hasobject else None
    return ArrayPart(array, array_order(array), state_buffer.getvalue(), stream)


def _layout(plan: DumpPlan) -> None:
    """Skeleton, then state pickles and object streams packed, then the raw
    data, each array starting on a STAGING_ALIGNMENT boundary."""
    offset = len(plan.skeleton)
    for part in plan.arrays:
        part.state_offset = offset
        offset += len(part.state)
        if part.stream is not None:
            part.data_offset = offset
            offset += len(part.stream)
    for part in plan.arrays:
        if part.stream is None:
            offset = -(-offset // STAGING_ALIGNMENT) * STAGING_ALIGNMENT
            part.data_offset = offset
            offset += part.data_length
    plan.size = max(offset, 1)


def _copy_into(mapping: mmap.mmap, part: ArrayPart) -> None:
    """The array's elements, in ``part.order``, straight into the mapping."""
    array = part.array
    target = np.ndarray(
        array.shape,
        dtype=array.dtype,
        buffer=mapping,
        offset=part.data_offset,
        order=part.order,  # type: ignore[arg-type]
    )
    try:
        np.copyto(target, array, casting="no")
    finally:
        del target  # release the buffer export so the mapping can close
