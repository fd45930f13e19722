"""``compress`` is parsed exactly as joblib parses it (joblib-format.md §2.2),
with the spec's deviations: True is zlib level 1, zstd exists, and protocol
errors come before anything is written. Error texts are compared with what
joblib itself raises for the same call.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from persistd import dump
from persistd._proto import persistd_pb2 as pb
from persistd.compression import DEFAULT_LEVEL, Compression, check_compress, resolve_compress

NONE = (pb.CODEC_NONE, 0)
ZLIB, GZIP, BZ2, LZMA, XZ, LZ4, ZSTD = (
    pb.CODEC_ZLIB, pb.CODEC_GZIP, pb.CODEC_BZ2, pb.CODEC_LZMA, pb.CODEC_XZ, pb.CODEC_LZ4, pb.CODEC_ZSTD,
)
D = DEFAULT_LEVEL

TABLE: list[tuple[Any, str | None, tuple[int, int]]] = [
    (0, "x.pkl", NONE),
    (False, "x.pkl", NONE),
    (True, "x.pkl", (ZLIB, 1)),  # spec: level 1 (joblib: 3)
    (3, "x.pkl", (ZLIB, 3)),
    (None, "x.pkl", (ZLIB, D)),  # joblib quirk: None compresses
    (9, "x.pkl", (ZLIB, 9)),
    (0, "x.gz", (GZIP, D)),
    (True, "x.gz", (GZIP, D)),
    (9, "x.gz", (GZIP, 9)),
    (0, "x.z", (ZLIB, D)),
    (True, "x.z", (ZLIB, 1)),
    (0, "x.bz2", (BZ2, D)),
    (0, "x.lzma", (LZMA, D)),
    (0, "x.xz", (XZ, D)),
    (0, "x.lz4", (LZ4, D)),
    (0, "x.zst", (ZSTD, D)),
    (5, "x.zst", (ZSTD, 5)),
    (0, "x.pkl.gz.bz2", (BZ2, D)),
    ("gzip", "x.xz", (GZIP, D)),
    ("zlib", "x.pkl", (ZLIB, D)),
    ("zstd", "x.pkl", (ZSTD, D)),
    ("lz4", None, (LZ4, D)),
    (("zlib", 3), "x.gz", (ZLIB, 3)),
    (("gzip", 9), "x.pkl", (GZIP, 9)),
    (("bz2", None), "x.pkl", (BZ2, D)),
    (("zstd", 7), "x.pkl", (ZSTD, 7)),
    (("zlib", 0), "x.gz", NONE),
    (("lzma", 0), "x.pkl", NONE),
    (("lz4", 0), "x.lz4", NONE),
    (("zlib", True), "x.pkl", (ZLIB, 1)),
    (("zlib", False), "x.pkl", NONE),
    (0.0, "x.pkl", NONE),
    (3, None, (ZLIB, 3)),  # file object: no extension inference
    (0, None, NONE),
    (True, None, (ZLIB, 1)),
    (np.int64(4), "x.pkl", (ZLIB, 4)),
]


def parse_compress(compress: Any, filename: str | None) -> Compression:
    """Both halves of joblib's handling of ``compress``, as dump runs them
    (with its target checks in between)."""
    method, level, from_true = check_compress(compress)
    return resolve_compress(compress, method, level, from_true, filename)


@pytest.mark.parametrize("compress,filename,expected", TABLE)
def test_mapping_table(compress: Any, filename: str | None, expected: tuple[int, int]) -> None:
    choice = parse_compress(compress, filename)
    assert (choice.codec, choice.level) == expected


def _joblib_error(call: Any) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("level", [-1, 10, 1.5, {}, "wrong", [1]])
def test_bad_level_message_is_joblibs(tmp_path: Path, level: Any) -> None:
    target = str(tmp_path / "x.pkl")
    compress = ("zlib", level) if isinstance(level, str) else level
    expected = _joblib_error(lambda: joblib.dump(1, target, compress=compress))
    assert expected.startswith("Non valid compress level given")
    with pytest.raises(ValueError) as info:
        dump(1, target, compress=compress)
    assert str(info.value) == expected
    assert not Path(target).exists()


def test_bad_tuple_message_is_joblibs(tmp_path: Path) -> None:
    target = str(tmp_path / "x.pkl")
    compress = ("zlib", 3, "extra")
    expected = _joblib_error(lambda: joblib.dump(1, target, compress=compress))
    with pytest.raises(ValueError) as info:
        dump(1, target, compress=compress)
    assert str(info.value) == expected
    assert expected == (
        "Compress argument tuple should contain exactly 2 elements: "
        "(compress method, compress level), you passed ('zlib', 3, 'extra')"
    )


@pytest.mark.parametrize("compress", ["wrong", ("wrong", 3), ("", 1)])
def test_bad_method_lists_our_methods(tmp_path: Path, compress: Any) -> None:
    method = compress if isinstance(compress, str) else compress[0]
    with pytest.raises(ValueError) as info:
        dump(1, str(tmp_path / "x.pkl"), compress=compress)
    assert str(info.value) == (
        'Non valid compression method given: "%s". Possible values are '
        "['zlib', 'gzip', 'bz2', 'lzma', 'xz', 'lz4', 'zstd']." % method
    )
    # joblib's text has the same beginning (its list is its registry's repr).
    theirs = _joblib_error(lambda: joblib.dump(1, str(tmp_path / "y.pkl"), compress=compress))
    assert theirs.startswith('Non valid compression method given: "%s". Possible values are ' % method)


def test_float_level_message(tmp_path: Path) -> None:
    """3.0 passes joblib's range check and then fails in BinaryZlibFile."""
    expected = _joblib_error(lambda: joblib.dump(1, str(tmp_path / "j.pkl"), compress=3.0))
    with pytest.raises(ValueError) as info:
        dump(1, str(tmp_path / "x.pkl"), compress=3.0)
    assert str(info.value) == expected


@pytest.mark.parametrize("target", [{}, 123, None, b"x.pkl"])
def test_bad_target_message_is_joblibs(target: Any) -> None:
    expected = _joblib_error(lambda: joblib.dump("foo", target))
    with pytest.raises(ValueError) as info:
        dump("foo", target)
    assert str(info.value) == expected


def test_level_checked_before_target() -> None:
    """joblib's order: compress errors first, then the target check."""
    with pytest.raises(ValueError, match="Non valid compress level"):
        dump("foo", 123, compress=11)


@pytest.mark.parametrize("protocol", [6, 99])
def test_bad_protocol_writes_nothing(tmp_path: Path, protocol: int) -> None:
    target = tmp_path / "x.pkl"
    with pytest.raises(ValueError, match=re.escape("pickle protocol must be <= 5")):
        dump(np.arange(3), target, protocol=protocol)
    assert not target.exists()


# -- through the daemon: the levels really reach the codec -------------------
HEADERS: list[tuple[Any, str, int, bytes]] = [
    (True, "x.pkl", 0, b"\x78\x01"),
    (1, "x.pkl", 0, b"\x78\x01"),
    (3, "x.pkl", 0, b"\x78\x5e"),
    (None, "x.pkl", 0, b"\x78\x5e"),  # zlib default 3
    (6, "x.pkl", 0, b"\x78\x9c"),
    (9, "x.pkl", 0, b"\x78\xda"),
    (0, "x.gz", 8, b"\x00"),  # gzip XFL: default 3 -> 00
    (("gzip", 9), "x.pkl", 8, b"\x02"),
    (("gzip", 1), "x.pkl", 8, b"\x04"),
    ("bz2", "x.pkl", 0, b"BZh9"),
    (("bz2", 3), "x.pkl", 0, b"BZh3"),
    ("lzma", "x.pkl", 0, b"\x5d\x00\x00\x80\x00"),  # preset 6: 8 MiB dictionary
    (("lzma", 1), "x.pkl", 0, b"\x5d\x00\x00\x10\x00"),  # preset 1: 1 MiB
    ("xz", "x.pkl", 0, b"\xfd\x37\x7a\x58\x5a\x00\x00\x04"),  # CRC64 check
    ("lz4", "x.pkl", 0, b"\x04\x22\x4d\x18"),
    (0, "x.zst", 0, b"\x28\xb5\x2f\xfd"),
]


@pytest.mark.parametrize("compress,name,offset,header", HEADERS)
def test_levels_reach_the_codec(tmp_path: Path, compress: Any, name: str, offset: int, header: bytes) -> None:
    target = tmp_path / name
    dump({"a": np.arange(1000)}, str(target), compress=compress)
    assert target.read_bytes()[offset : offset + len(header)] == header


@pytest.mark.parametrize("ext", [".pkl", "", ".npy"])
def test_unknown_extension_is_uncompressed(tmp_path: Path, ext: str) -> None:
    target = tmp_path / ("value" + ext)
    dump([np.arange(4)], str(target))
    assert target.read_bytes()[:1] == b"\x80"


def test_extension_inference_uses_path_objects(tmp_path: Path) -> None:
    """joblib 1.6 applies os.fspath first, so Path targets infer too."""
    target = tmp_path / "value.gz"
    dump([np.arange(4)], target)
    assert target.read_bytes()[:2] == b"\x1f\x8b"


def test_file_object_no_inference(tmp_path: Path) -> None:
    target = tmp_path / "value.gz"
    with open(target, "wb") as f:
        assert dump([np.arange(4)], f) is None
    assert target.read_bytes()[:1] == b"\x80"
    buffer = io.BytesIO()
    dump([np.arange(4)], buffer, compress=3)
    assert buffer.getvalue()[:2] == b"\x78\x5e"
