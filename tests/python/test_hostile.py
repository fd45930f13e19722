"""Hostile files against a real daemon (hardening, item 5).

Each case is a file crafted by hand (see hostile.py): truncated streams of
every codec, wrong magic, huge declared sizes, deep nesting, MARK and memo
bombs, decompression bombs, array wrappers that lie about their data. For
each, ``persistd.load`` must raise the expected exception (or, where joblib
itself accepts the file, load it), the daemon must stay alive and serve a
good file right after, and its peak RSS may grow by less than 64 MB -- the
point of the pickle limits: a few hundred bytes must not cost a gigabyte.

The daemon is this module's own, so its /proc/<pid>/status is only ours to
read; its peak (VmHWM) is reset before each case through clear_refs. It
runs with --max-pickle-bytes 32M: the pickle part of a stream is held in
memory up to that limit by design (default 256 MiB), and 64 MB per case
must hold for the case that reaches it too. The other limits are the
defaults.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lz4.frame
import numpy as np
import pytest

from conftest import Daemon, daemon_binary
from hostile import ConfiguredDaemon, array_wrapper, proto, reset_peak, short_str, vm_kib, zstd_frame
from persistd import load

RSS_LIMIT_KIB = 64 * 1024
GOOD_VALUE = np.arange(1000.0)


def good_stream() -> bytes:
    """A valid joblib stream: one float64 array of 1000 elements."""
    return array_wrapper((1000,), "f8", GOOD_VALUE.tobytes())


def half(data: bytes) -> bytes:
    """The first half of `data`: a stream cut short."""
    return data[: len(data) // 2]


def lz4_compress(data: bytes) -> bytes:
    """lz4 frame, as joblib writes it."""
    return lz4.frame.compress(data)


def long8(opcode: bytes, n: int) -> bytes:
    """An opcode with an 8-byte little-endian length (BINBYTES8, FRAME...)."""
    return opcode + struct.pack("<Q", n)


def sparse_memo_bomb() -> bytes:
    """One million LONG_BINPUTs at scattered indices: a hash map entry each."""
    puts = b"".join(b"r" + struct.pack("<I", 0xFFFFFFFF - i * 4099) for i in range(1_000_000))
    return proto(4) + b"N" + puts + b"."


def padded_wrapper(pad_length: int, pad_byte: int) -> bytes:
    """A joblib >= 1.2 wrapper whose alignment padding is forged."""
    stream = array_wrapper((2,), "f8", b"\0" * 16)
    body = stream[: -(16 + 1)]  # without data and STOP
    pad_at = body.rindex(b"ub") + 2
    return body[:pad_at] + bytes([pad_length]) + bytes([pad_byte]) * pad_length + b"\0" * 16 + b"."


def frame_split_wrapper() -> bytes:
    """A wrapper whose BUILD sits inside a FRAME that goes on after it."""
    stream = good_stream()
    build_end = stream.index(b"ub") + 2
    pickle_part = stream[2:build_end] + b"N0"  # two more opcodes inside
    return proto(4) + long8(b"\x95", len(pickle_part)) + pickle_part + stream[build_end:]


@dataclass(frozen=True)
class Case:
    """A hostile file and what loading it must do."""

    make: Callable[[], bytes]
    raises: type[BaseException] | None  # None: joblib loads it too
    match: str = ""  # a part of the message, when it matters


CASES: dict[str, Case] = {
    # Truncated streams, one per codec (the stream stops mid-way).
    "truncated_none": Case(lambda: half(good_stream()), ValueError, "truncated"),
    "truncated_zlib": Case(lambda: half(zlib.compress(good_stream())), ValueError, "zlib"),
    "truncated_gzip": Case(lambda: half(gzip.compress(good_stream())), ValueError, "gzip"),
    "truncated_bz2": Case(lambda: half(bz2.compress(good_stream())), ValueError, "bz2"),
    "truncated_lzma": Case(
        lambda: half(lzma.compress(good_stream(), format=lzma.FORMAT_ALONE)), ValueError, "lzma"
    ),
    "truncated_xz": Case(lambda: half(lzma.compress(good_stream(), format=lzma.FORMAT_XZ)), ValueError, "xz"),
    "truncated_lz4": Case(lambda: half(lz4_compress(good_stream())), ValueError, "lz4"),
    "truncated_zstd": Case(lambda: half(zstd_frame(good_stream())), ValueError, "zstd"),
    # Wrong magic, or not a pickle at all.
    "random_bytes": Case(lambda: bytes(range(7, 256)) * 4, ValueError, "not a pickle"),
    "zstd_magic_then_garbage": Case(lambda: b"\x28\xb5\x2f\xfd" + b"\xff" * 64, ValueError, "zstd"),
    "gzip_magic_bad_header": Case(lambda: b"\x1f\x8b\x09" + b"\0" * 64, ValueError, "gzip"),
    "unsupported_protocol": Case(lambda: b"\x80\x09N.", ValueError, "protocol 9"),
    "proto_opcode_only": Case(lambda: b"\x80", ValueError, "truncated"),
    "zfile_header_garbage": Case(lambda: b"ZF0x0000000000000000ff" + b"\xff" * 32, ValueError),
    # Huge declared sizes in a small file.
    "binbytes8_claims_4_exabytes": Case(lambda: proto(4) + long8(b"\x8e", 1 << 62) + b"x" * 64, ValueError),
    "binunicode8_claims_1_terabyte": Case(lambda: proto(4) + long8(b"\x8d", 1 << 40) + b"x" * 64, ValueError),
    "frame_claims_1_terabyte": Case(lambda: proto(4) + long8(b"\x95", 1 << 40) + b"N.", ValueError),
    "long4_claims_2_gigabytes": Case(lambda: proto(2) + b"\x8b\xff\xff\xff\x7f" + b"\x01" * 64, ValueError),
    "array_claims_8_terabytes": Case(lambda: array_wrapper((1 << 40,), "f8", b"\0" * 64), ValueError, "past the end"),
    "array_shape_product_overflows": Case(
        lambda: array_wrapper((1 << 31, 1 << 31, 1 << 31), "f8", b""), ValueError, "past the end"
    ),
    "int_line_without_newline": Case(lambda: b"I" + b"7" * (4 << 20), ValueError, "truncated"),
    # Structure bombs: tiny on disk, huge for an unbounded unpickler.
    "mark_bomb_30M_zstd": Case(lambda: zstd_frame(proto(4), (0x28, 30_000_000), b"."), ValueError, "--max-pickle-memory"),
    "empty_list_bomb_30M_zstd": Case(
        lambda: zstd_frame(proto(4), (0x5D, 30_000_000), b"."), ValueError, "--max-pickle-memory"
    ),
    "deep_nesting_2M_lists": Case(
        lambda: zstd_frame(proto(4), (0x5D, 2_000_000), (0x61, 1_999_999), b"."), ValueError, "--max-pickle-memory"
    ),
    "memoize_bomb_30M_zstd": Case(
        lambda: zstd_frame(proto(4) + b"N", (0x94, 30_000_000), b"."), ValueError, "--max-pickle-memory"
    ),
    "sparse_memo_bomb_1M": Case(sparse_memo_bomb, ValueError, "--max-pickle-memory"),
    "empty_frame_bomb_1M": Case(lambda: proto(4) + long8(b"\x95", 0) * 1_000_000 + b"N.", ValueError, "--max-pickle-memory"),
    "pickle_part_over_the_limit_zstd": Case(
        lambda: zstd_frame(long8(proto(4) + b"\x8e", 300 << 20), (0x41, 300 << 20), b"."),
        ValueError,
        "--max-pickle-bytes",
    ),
    "memo_get_of_unset_index": Case(lambda: proto(4) + b"j\x07\x00\x00\x00.", ValueError, "memo"),
    "stop_on_empty_stack": Case(lambda: proto(4) + b".", ValueError, "underflow"),
    "stop_on_a_mark": Case(lambda: proto(4) + b"(.", ValueError),
    # Decompression bombs of zeros: invalid from the first decoded byte.
    "zstd_1GiB_of_zeros": Case(lambda: zstd_frame((0, 1 << 30)), ValueError, "not a pickle"),
    "zstd_4GiB_of_zeros_after_proto": Case(lambda: zstd_frame(proto(4), (0, 4 << 30)), ValueError, "0x00"),
    "lz4_64MiB_of_zeros": Case(lambda: lz4_compress(bytes(64 << 20)), ValueError, "not a pickle"),
    "gzip_64MiB_of_zeros": Case(lambda: gzip.compress(bytes(64 << 20), 1), ValueError, "not a pickle"),
    "xz_16MiB_of_zeros": Case(lambda: lzma.compress(bytes(16 << 20), preset=0), ValueError, "not a pickle"),
    # Array wrappers that lie.
    "array_data_shorter_than_shape": Case(lambda: array_wrapper((1000,), "f8", b"\0" * 100), ValueError, "past the end"),
    "array_data_longer_than_shape": Case(lambda: array_wrapper((10,), "f8", b"\xff" * 8000), ValueError, "opcode"),
    "array_negative_shape": Case(lambda: array_wrapper((-5,), "f8", b""), ValueError, "shape"),
    "array_shape_not_ints": Case(
        lambda: array_wrapper((), "f8", b"", shape_items=short_str("ten") + b"\x85"), ValueError, "shape"
    ),
    # A dtype this reader cannot size may be a real one it does not know:
    # Unimplemented, which the client raises as RuntimeError.
    "array_bogus_dtype_code": Case(lambda: array_wrapper((4,), "zz", b"\0" * 32), RuntimeError, "item size"),
    "array_dtype_itemsize_2G": Case(
        lambda: array_wrapper((1000,), "V2000000000", b"\0" * 64), ValueError, "past the end"
    ),
    "array_padding_byte_forged": Case(lambda: padded_wrapper(7, 0x00), ValueError, "padding byte"),
    "array_padding_longer_than_alignment": Case(lambda: padded_wrapper(200, 0xFF), ValueError, "padding length"),
    "array_build_inside_a_frame": Case(frame_split_wrapper, ValueError, "frame"),
    # What joblib accepts, so do we: bytes after the STOP are not read.
    "garbage_after_stop": Case(lambda: good_stream() + b"\xff" * 4096, None),
    "zstd_garbage_after_stop_in_frame": Case(lambda: zstd_frame(good_stream(), (0xFF, 16 << 20)), None),
}


@pytest.fixture(scope="module")
def hostile_daemon() -> Iterator[Daemon]:
    """A daemon of this module's own; the client is pointed at it."""
    instance = ConfiguredDaemon(daemon_binary(), ["--max-pickle-bytes", "32M"])
    instance.start()
    previous = os.environ.get("PERSISTD_SOCKET")
    os.environ["PERSISTD_SOCKET"] = instance.socket
    try:
        yield instance
    finally:
        if previous is None:
            os.environ.pop("PERSISTD_SOCKET", None)
        else:
            os.environ["PERSISTD_SOCKET"] = previous
        instance.cleanup()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid file, loaded after every case: the daemon must still serve."""
    path = tmp_path_factory.mktemp("good") / "good.pkl"
    path.write_bytes(zstd_frame(good_stream()))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file(name: str, hostile_daemon: Daemon, good_file: Path, tmp_path: Path) -> None:
    """Loading the file fails as expected (or loads, as joblib would), the
    daemon survives and serves, and its peak RSS stays within 64 MB."""
    case = CASES[name]
    path = tmp_path / (name + ".pkl")
    path.write_bytes(case.make())
    process = hostile_daemon.process
    assert process is not None
    pid = process.pid
    if not reset_peak(pid):
        pytest.skip("cannot reset the daemon's peak RSS here (clear_refs)")
    before = vm_kib(pid)["VmRSS"]

    if case.raises is None:
        loaded = load(path)
        np.testing.assert_array_equal(loaded, GOOD_VALUE)
    else:
        with pytest.raises(case.raises) as raised:
            load(path)
        assert case.match in str(raised.value)

    peak = vm_kib(pid)["VmHWM"]
    assert process.poll() is None, "the daemon died:\n" + hostile_daemon.log()
    np.testing.assert_array_equal(load(good_file), GOOD_VALUE)
    growth = peak - before
    print("%s: daemon peak RSS +%d KiB" % (name, growth))
    assert growth < RSS_LIMIT_KIB, "the daemon's RSS grew by %d KiB" % growth


def test_there_are_at_least_30_cases() -> None:
    """The table is the point: keep it broad."""
    assert len(CASES) >= 30
