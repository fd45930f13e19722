"""Turn joblib's ``compress`` argument into a (codec, level) pair.

joblib's ``dump`` accepts a bool, an int level, a method name, a
``(method, level)`` tuple, and infers the method from the file extension in
some of those cases. Users rely on every corner of that mapping (including
``compress=None`` meaning "zlib, default level"), so this module replays
joblib 1.6's decision sequence and error messages step by step; see
``joblib/numpy_pickle.py:dump``. The daemon does the compressing, so the
result is only a codec enum and a level, with -1 meaning "the codec's joblib
default".

Deliberate differences, all from the persistd spec:

* ``compress=True`` means zlib level 1 (joblib: level 3). With an inferred
  method (``x.gz``) it still means that method's default level.
* zstd is accepted: ``"zstd"``, ``("zstd", level)`` and the ``.zst``
  extension; its default level is 3.
* The "Non valid compression method" message lists persistd's methods, as
  joblib lists its registry.
* lz4 needs no Python package: the daemon compresses, so joblib's "LZ4 is
  not installed" error cannot happen.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from persistd._proto import persistd_pb2 as pb

#: Methods in joblib's registry order (extension inference keeps the *last*
#: match, so the order matters), then persistd's additions.
METHODS: dict[str, int] = {
    "zlib": pb.CODEC_ZLIB,
    "gzip": pb.CODEC_GZIP,
    "bz2": pb.CODEC_BZ2,
    "lzma": pb.CODEC_LZMA,
    "xz": pb.CODEC_XZ,
    "lz4": pb.CODEC_LZ4,
    "zstd": pb.CODEC_ZSTD,
}

EXTENSIONS: dict[str, str] = {
    "zlib": ".z",
    "gzip": ".gz",
    "bz2": ".bz2",
    "lzma": ".lzma",
    "xz": ".xz",
    "lz4": ".lz4",
    "zstd": ".zst",
}

#: Level sent to the daemon for "use the codec's default".
DEFAULT_LEVEL = -1

#: ``compress=True`` compresses with zlib at this level (persistd spec).
TRUE_ZLIB_LEVEL = 1

_VALID_LEVELS = list(range(10))


@dataclass(frozen=True)
class Compression:
    """What a ``Dump`` request needs: a proto ``Codec`` and a level (-1 = default)."""

    codec: Any  # a pb.Codec value
    level: int


NO_COMPRESSION = Compression(pb.CODEC_NONE, 0)


def check_compress(compress: Any) -> tuple[str | None, Any, bool]:
    """First half of joblib's ``dump``: validate ``compress``.

    Returns ``(method, level, from_true)`` where ``from_true`` records that
    the level came from ``compress=True`` (persistd maps that to zlib 1).
    """
    method: str | None = "zlib"
    from_true = False
    if compress is True:
        level: Any = None
        from_true = True
    elif isinstance(compress, tuple):
        if len(compress) != 2:
            raise ValueError(
                "Compress argument tuple should contain exactly 2 elements: "
                "(compress method, compress level), you passed {}".format(compress)
            )
        method, level = compress
    elif isinstance(compress, str):
        method, level = compress, None
    else:
        level = compress

    if level is not None and level is not False and not _in_range(level):
        raise ValueError(
            'Non valid compress level given: "{}". Possible values are {}.'.format(
                level, _VALID_LEVELS
            )
        )
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            'Non valid compression method given: "{}". Possible values are {}.'.format(
                method, list(METHODS)
            )
        )
    return method, level, from_true


def resolve_compress(
    compress: Any, method: str | None, level: Any, from_true: bool, filename: str | None
) -> Compression:
    """Second half: extension inference, then the final (codec, level)."""
    # joblib turns a method string into a tuple before this test, so only
    # bools, ints and None let the extension choose the method.
    if filename is not None and not isinstance(compress, (tuple, str)):
        method = None
        for name, extension in EXTENSIONS.items():
            if filename.endswith(extension):
                method = name
        if method is not None and level == 0:
            level = None

    if level is not None and level == 0:  # 0, False, 0.0 and ("zlib", 0)
        return NO_COMPRESSION
    if method is None:  # no extension matched: joblib falls back to zlib
        method = "zlib"
    if level is None:
        if from_true and method == "zlib":
            return Compression(METHODS[method], TRUE_ZLIB_LEVEL)
        return Compression(METHODS[method], DEFAULT_LEVEL)
    return Compression(METHODS[method], _as_int_level(level))


def _in_range(level: Any) -> bool:
    """joblib's ``level in range(10)``: equality based, so 3.0 and True pass."""
    try:
        return level in range(10)
    except TypeError:
        return False


def _as_int_level(level: Any) -> int:
    """Reject levels like 3.0 that pass ``in range(10)`` but are not integers,
    with the message joblib's ``BinaryZlibFile`` gives for them."""
    try:
        return int(operator.index(level))
    except TypeError:
        raise ValueError(
            "'compresslevel' must be an integer between 1 and 9. "
            "You provided 'compresslevel={}'".format(level)
        ) from None
