"""``persistctl verify FILE``: check a file through the daemon, unpickling nothing.

The daemon decodes and indexes the file exactly as a load does (so a file
that verifies is one that loads, and a corrupt one fails here with the
message a load would give); this module then maps the segment and, for
every array, checks that its bytes are as many as its dtype and shape say
and computes a CRC-32 of them, so two copies of a model can be compared
without loading either. No pickle is executed: verifying an untrusted file
is safe.
"""

from __future__ import annotations

import math
import os
import zlib
from typing import Any

from persistd import transport
from persistd._proto import persistd_pb2 as pb
from persistd.client import Client, default_client

_KINDS = {
    pb.LoadArray.RAW: "raw",
    pb.LoadArray.OBJECT_STREAM: "object",
    pb.LoadArray.LEGACY: "legacy",
}
#: CRC-32 is computed in slices: one slice never pins much of a huge array
#: in memory at once.
_SLICE = 16 << 20


def verify(filename: str, client: Client | None = None) -> dict[str, Any]:
    """What the daemon makes of ``filename``: codec, format, sizes and, per
    array, kind, dtype, shape, order, byte count, CRC-32 and whether the
    byte count matches; ``ok`` is False when any array is inconsistent.
    Asked of ``client``'s daemon (default: the default client's)."""
    endpoint = (client or default_client())._endpoint
    fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC)
    try:
        source_bytes = os.fstat(fd).st_size
        reply, session_id = endpoint.load(fd=fd, filename=filename)
    finally:
        os.close(fd)
    lease = endpoint.make_lease(session_id, reply.lease_id)
    segment = transport.map_segment(reply.segment_path, lease)
    try:
        view = memoryview(segment)
        arrays = [_array(index, entry, view) for index, entry in enumerate(reply.arrays)]
        view.release()
    finally:
        segment.close()
    return {
        "file": filename,
        "codec": pb.Codec.Name(reply.codec).removeprefix("CODEC_").lower(),
        "format": pb.Format.Name(reply.format).removeprefix("FORMAT_").lower(),
        "source_bytes": source_bytes,
        "segment_bytes": int(reply.segment_size),
        "pickle_bytes": int(reply.skeleton.length),
        "trailing_bytes": int(reply.trailing_bytes),
        "cache_hit": bool(reply.cache_hit),
        "arrays": arrays,
        "ok": all(array["ok"] for array in arrays),
    }


def _array(index: int, entry: Any, segment: memoryview) -> dict[str, Any]:
    kind = _KINDS.get(entry.kind, str(entry.kind))
    offset, length = int(entry.data.offset), int(entry.data.length)
    info: dict[str, Any] = {"index": index, "kind": kind, "bytes": length}
    if kind == "legacy":  # the bytes are in a companion file, loaded apart
        info.update(ok=True, crc32=None)
        return info
    problems = []
    if offset + length > len(segment):
        problems.append("extends past the end of the segment")
        crc = None
    else:
        crc = 0
        for start in range(offset, offset + length, _SLICE):
            crc = zlib.crc32(segment[start : min(start + _SLICE, offset + length)], crc)
    if kind == "raw":
        shape = [int(n) for n in entry.shape]
        info.update(
            dtype=entry.dtype or "(structured)",
            shape=shape,
            order="F" if entry.fortran_order else "C",
        )
        expected = int(entry.itemsize) * math.prod(shape)
        if entry.itemsize and length != expected:
            problems.append(
                "holds %d bytes, its dtype and shape need %d" % (length, expected)
            )
    info.update(crc32=None if crc is None else "%08x" % crc, ok=not problems)
    if problems:
        info["problem"] = "; ".join(problems)
    return info
